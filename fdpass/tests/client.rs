//! The library's `holder::Client` against a real `fdpass hold` and against
//! fake holders that say nothing, flood, or break the protocol, and the
//! tool's exit statuses against the same fakes. Every test here holds the
//! fd-count check, so they run one at a time and each proves that the
//! client closed every fd that came.
#![cfg(unix)]

mod util;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_fdpass::holder::Client;
use io_fdpass_test_support::NoLeak;
use util::{fails, fdpass, s, Holder, TempDir};

#[test]
fn the_library_client_against_a_real_holder() {
    // Taken first, so that the temporary directory's removal, which
    // opens fds, is over when the next test takes it.
    let guard = NoLeak::start();
    let dir = TempDir::new("client");
    let holder = Holder::start(&dir, &[]);
    let client = Client::new(&holder.socket);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    client.store("web", &listener).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    client
        .store_with_lifetime(
            "pair",
            &a,
            io_fdpass::holder::protocol::Lifetime::forever().ttl(Duration::from_secs(3600)),
        )
        .unwrap();
    drop((a, b));
    assert_eq!(client.list().unwrap(), ["pair", "web"]);
    let entries = client.entries().unwrap();
    assert_eq!(entries[1].kind, "tcp listener");
    assert_eq!(
        entries[1].address.as_deref(),
        Some(address.to_string().as_str())
    );
    assert_eq!(entries[0].kind, "unix stream");
    let stored = entries[0].stored_at.unwrap();
    assert!((3599..=3601).contains(&(entries[0].expires_at.unwrap() - stored)));
    assert_eq!(entries[0].stored_by_pid, Some(std::process::id()));

    let fetched = std::net::TcpListener::from(client.fetch("web").unwrap());
    assert_eq!(fetched.local_addr().unwrap(), address);
    drop((fetched, listener));
    let taken = client.take_many(&["pair", "web"]).unwrap();
    assert_eq!(taken.len(), 2);
    drop(taken);
    assert!(client.list().unwrap().is_empty());

    let not_found = client.fetch("web").unwrap_err();
    assert_eq!(not_found.kind(), std::io::ErrorKind::NotFound);
    assert!(
        not_found.to_string().contains("no fd named web"),
        "{not_found}"
    );
    assert_eq!(
        client.drop("web").unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    let bad = client.store("a:b", std::io::stdin()).unwrap_err();
    assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
    let reserved = client.store("fdpass-hold", std::io::stdin()).unwrap_err();
    assert_eq!(reserved.kind(), std::io::ErrorKind::InvalidInput);
    drop(holder);
    guard.assert_unchanged();
}

/// A holder that is not one: it accepts, and runs `behave` on each
/// connection in turn. Dropping it waits until every connection is closed.
struct FakeHolder {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHolder {
    fn start(dir: &TempDir, name: &str, behave: fn(UnixStream)) -> FakeHolder {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        behave(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeHolder {
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn sock(&self) -> &str {
        s(&self.path)
    }
}

impl Drop for FakeHolder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the request line a client sends after the greeting.
fn greet_and_read(stream: &UnixStream) {
    (&*stream).write_all(b"fdpass-hold 1\n").unwrap();
    let mut byte = [0];
    while (&*stream).read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {}
}

#[test]
fn fake_holders_get_nothing_and_hold_up_no_client() {
    let guard = NoLeak::start();
    let dir = TempDir::new("fakes");
    let silent = FakeHolder::start(&dir, "silent.sock", |stream| {
        // Silent until the client gives up.
        let _ = (&stream).read(&mut [0]);
    });
    let flood = FakeHolder::start(&dir, "flood.sock", |stream| {
        greet_and_read(&stream);
        let _ = (&stream).write_all(b"ok\n");
        let chunk = [b'x'; 64 * 1024];
        while (&stream).write_all(&chunk).is_ok() {}
    });
    let codes = FakeHolder::start(&dir, "codes.sock", |stream| {
        greet_and_read(&stream);
        let _ = (&stream).write_all(b"error 0 done, exit with 0\n");
    });
    let big_code = FakeHolder::start(&dir, "code200.sock", |stream| {
        greet_and_read(&stream);
        let _ = (&stream).write_all(b"error 200 exit with 200\n");
    });
    let no_fds = FakeHolder::start(&dir, "nofds.sock", |stream| {
        greet_and_read(&stream);
        let _ = (&stream).write_all(b"ok\n");
    });
    let extra_fds = FakeHolder::start(&dir, "extra.sock", |stream| {
        greet_and_read(&stream);
        let null = std::fs::File::open("/dev/null").unwrap();
        let _ = io_fdpass::send_fds(&stream, b"ok\n", &[null.as_fd(); 5]);
    });

    // The tool: a status from the table, whatever the peer says.
    fails(
        fdpass().args(["list", "--timeout", "500ms", silent.sock()]),
        75,
        "did not answer in time",
    );
    fails(fdpass().args(["list", flood.sock()]), 76, "longer than");
    fails(
        fdpass().args(["fetch", codes.sock(), "x", "--", "true"]),
        76,
        "not an fdpass holder",
    );
    fails(
        fdpass().args(["drop", big_code.sock(), "x"]),
        76,
        "not an fdpass holder",
    );
    fails(
        fdpass().args(["fetch", no_fds.sock(), "x", "--", "true"]),
        76,
        "sent 0 fd(s)",
    );
    fails(
        fdpass().args(["fetch", extra_fds.sock(), "x", "--", "true"]),
        76,
        "not the 1 asked for",
    );

    // The library: the right kinds, and every fd that came closed.
    let quick = |fake: &FakeHolder| Client::new(&fake.path).timeout(Duration::from_millis(500));
    use std::io::ErrorKind::{InvalidData, TimedOut};
    assert_eq!(quick(&silent).list().unwrap_err().kind(), TimedOut);
    assert_eq!(
        Client::new(&flood.path)
            .max_answer(1 << 20)
            .list()
            .unwrap_err()
            .kind(),
        InvalidData
    );
    assert_eq!(quick(&codes).drop("x").unwrap_err().kind(), InvalidData);
    assert_eq!(quick(&no_fds).fetch("x").unwrap_err().kind(), InvalidData);
    assert_eq!(
        quick(&extra_fds).fetch("x").unwrap_err().kind(),
        InvalidData
    );
    assert_eq!(
        quick(&extra_fds).fetch_many(&["x"; 2]).unwrap_err().kind(),
        InvalidData
    );
    drop((silent, flood, codes, big_code, no_fds, extra_fds));
    guard.assert_unchanged();
}
