//! A holder inside the test process (`holder::Server`) and the library's
//! client against it: every request, with lifetimes and refusals, and not
//! one fd left open once the server is gone.
#![cfg(all(unix, feature = "tokio"))]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::Duration;

use io_fdpass::holder::protocol::Lifetime;
use io_fdpass::holder::{Client, Holder, Server, System, MAX_PIDFD_WATCHES};
use tokio::sync::oneshot;
use util::{file_with, no_leak_after_tokio, open_fds, read_all, temp_path, wait_until};

/// Runs a holder at `socket` on a runtime of its own, in a thread, until
/// the returned sender is dropped; the thread ends with the runtime, and
/// with it every task and fd of the server.
fn serve(socket: &Path, server: impl FnOnce(Server) -> Server + Send + 'static) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let socket = socket.to_owned();
    let (ready, listening) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let mut server = server(Server::new(listener));
            ready.send(()).unwrap();
            server.run_until(stopped).await.unwrap_err();
        });
    });
    listening.recv().unwrap();
    Running {
        stop: Some(stop),
        thread: Some(thread),
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn store_fetch_take_list_and_drop() {
    let check = no_leak_after_tokio();
    {
        let socket = temp_path("holder-lib");
        let _holder = serve(&socket, |server| server);
        let client = Client::new(&socket);
        let web = file_with("web");
        let db = file_with("db");
        client.store("web", &web).unwrap();
        client.store("db", &db).unwrap();
        drop((web, db));
        assert_eq!(client.list().unwrap(), ["db", "web"]);
        let entries = client.entries().unwrap();
        assert_eq!(entries[1].kind, "file");
        assert_eq!(
            entries[1].stored_by_uid,
            Some(rustix::process::getuid().as_raw())
        );

        assert_eq!(read_all(client.fetch("web").unwrap()), "web");
        let both = client.fetch_many(&["db", "web"]).unwrap();
        assert_eq!(both.len(), 2);
        drop(both);

        // A take of a name not held takes nothing.
        let missing = client.take_many(&["web", "nothing"]).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert_eq!(client.list().unwrap(), ["db", "web"]);
        let taken = client.take_many(&["web"]).unwrap();
        assert_eq!(read_all(taken.into_iter().next().unwrap()), "web");
        assert_eq!(client.list().unwrap(), ["db"]);

        client.drop("db").unwrap();
        assert!(client.list().unwrap().is_empty());
        let gone = client.drop("db").unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
        let reserved = client.store("fdpass-hold", file_with("x")).unwrap_err();
        assert_eq!(reserved.kind(), ErrorKind::InvalidInput);
        let _ = std::fs::remove_file(&socket);
    }
    check.assert_unchanged();
}

#[test]
fn limits_and_lifetimes_are_kept() {
    let check = no_leak_after_tokio();
    {
        let socket = temp_path("holder-lib-limits");
        let _holder = serve(&socket, |server| server.with_holder(Holder::new(System, 1)));
        let client = Client::new(&socket);
        let mut pipe = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let until = Lifetime::forever().until_exit(pipe.id());
        client
            .store_with_lifetime("a", file_with("a"), until)
            .unwrap();
        let full = client.store("b", file_with("b")).unwrap_err();
        assert_eq!(full.kind(), ErrorKind::QuotaExceeded);
        pipe.kill().unwrap();
        pipe.wait().unwrap();
        // The process's exit drops what was kept until then.
        while !client.list().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let brief = Lifetime::forever().ttl(Duration::from_millis(50));
        client
            .store_with_lifetime("b", file_with("b"), brief)
            .unwrap();
        while !client.list().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&socket);
    }
    check.assert_unchanged();
}

#[test]
fn past_the_pidfd_watches_exits_are_looked_for() {
    let check = no_leak_after_tokio();
    {
        let socket = temp_path("holder-lib-watches");
        let _holder = serve(&socket, |server| server);
        let client = Client::new(&socket);
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap()
        };
        let store = |name: &str, pid: u32| {
            let until = Lifetime::forever().until_exit(pid);
            client
                .store_with_lifetime(name, file_with(name), until)
                .unwrap();
        };
        let (mut first, mut second) = (sleep(), sleep());
        for i in 0..MAX_PIDFD_WATCHES {
            store(&format!("first{i:02}"), first.id());
        }
        store("second0", second.id());
        store("second1", second.id());
        // A pidfd for each of the first, none for the rest.
        let watching = if cfg!(target_os = "linux") {
            MAX_PIDFD_WATCHES
        } else {
            0
        };
        assert_eq!(pidfds(), watching, "{:?}", open_fds());

        // A process watched without one: its exit is seen all the same.
        second.kill().unwrap();
        second.wait().unwrap();
        let held = || client.list().unwrap();
        wait_until(
            || held().len() == MAX_PIDFD_WATCHES,
            || format!("{:?} held after the exit of the second", held()),
        );
        first.kill().unwrap();
        first.wait().unwrap();
        wait_until(
            || held().is_empty(),
            || format!("{:?} held after the exit of the first", held()),
        );
        wait_until(
            || pidfds() == 0,
            || format!("the watches that ended left pidfds open: {:?}", open_fds()),
        );

        // Their pidfds are given back.
        let mut third = sleep();
        store("third", third.id());
        assert_eq!(pidfds(), watching.min(1), "{:?}", open_fds());
        third.kill().unwrap();
        third.wait().unwrap();
        wait_until(|| held().is_empty(), || format!("{:?} held", held()));
        let _ = std::fs::remove_file(&socket);
    }
    check.assert_unchanged();
}

/// How many pidfds this process has open.
fn pidfds() -> usize {
    open_fds()
        .iter()
        .filter(|fd| fd.ends_with("[pidfd]"))
        .count()
}

#[test]
fn a_silent_client_is_dropped_and_others_are_served() {
    let check = no_leak_after_tokio();
    {
        let socket = temp_path("holder-lib-silent");
        let _holder = serve(&socket, |server| {
            server.client_timeout(Duration::from_millis(200))
        });
        let mut silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let client = Client::new(&socket);
        client.store("a", file_with("a")).unwrap();
        let mut greeting = [0; 14];
        silent.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"fdpass-hold 1\n");
        // Its deadline passes: the holder closes the connection.
        let mut rest = Vec::new();
        assert_eq!(silent.read_to_end(&mut rest).unwrap(), 0);
        let _ = silent.write_all(b"list\n");
        assert_eq!(client.list().unwrap(), ["a"]);
        let _ = std::fs::remove_file(&socket);
    }
    check.assert_unchanged();
}
