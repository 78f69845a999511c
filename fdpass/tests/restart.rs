//! The README's zero-downtime restart: a holder keeps the listening socket,
//! and an HTTP server is restarted five times while a client makes requests
//! without pause. Not one request may be refused or fail.

mod util;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use util::{fdpass, success, terminate, Holder, TempDir};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server.py");

/// `fdpass fetch SOCKET web -- python3 server.py`, one generation.
fn start_server(holder: &Holder) -> Child {
    fdpass()
        .args(["fetch", holder.sock(), "web", "--", "python3", SERVER])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn five_restarts_and_not_one_request_fails() {
    let dir = TempDir::new("restart");
    let holder = Holder::start(&dir, &[]);
    let port = util::free_port();
    let addr = format!("tcp:127.0.0.1:{port}");
    success(fdpass().args(["listen", &addr, "--"]).args([
        env!("CARGO_BIN_EXE_fdpass"),
        "store",
        holder.sock(),
        "web",
        "3",
    ]));
    assert_eq!(holder.list(), ["web"]);

    let mut server = start_server(&holder);
    let mut pids = vec![server.id()];
    // The first answer shows the server is up.
    util::http_get(port).expect("the first generation answers");

    let stop = Arc::new(AtomicBool::new(false));
    let client = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let (mut ok, mut failed, mut served_by) = (0, Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match util::http_get(port) {
                    Ok(answer) => {
                        ok += 1;
                        let pid = answer.rsplit(' ').next().unwrap_or("").trim().to_owned();
                        if !served_by.contains(&pid) {
                            served_by.push(pid);
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, served_by)
        }
    });

    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        // The new generation first, then the old one is told to stop: it
        // finishes the request in hand, and what waits in the queue goes
        // to the new one.
        let next = start_server(&holder);
        pids.push(next.id());
        std::thread::sleep(Duration::from_millis(400));
        assert!(terminate(&mut server).success());
        server = next;
        assert_eq!(holder.list(), ["web"], "the holder still holds the socket");
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, served_by) = client.join().unwrap();
    assert!(terminate(&mut server).success());

    println!(
        "restart test: {ok} requests, {} failed, served by {} generations",
        failed.len(),
        served_by.len()
    );
    assert_eq!(failed, Vec::<String>::new(), "failed requests");
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    assert_eq!(served_by, pids, "every generation served, in order");
    assert_eq!(holder.list(), ["web"]);
}

#[test]
fn the_readme_commands_work_as_written() {
    let dir = TempDir::new("readme");
    let port = util::free_port();
    let socket = dir.join("fds.sock");
    let pids = dir.join("pids");
    let blocks = util::readme_blocks("### Zero-downtime restart in three commands", 2);
    let script = |block: &str| {
        util::note_pids(block, &pids)
            .replace("/tmp/fds.sock", socket.to_str().unwrap())
            .replace("8080", &port.to_string())
    };

    let _stop = util::StopAll(pids.clone());
    util::run_script(&script(&blocks[0]));
    let first = util::http_get(port).expect("the server answers");
    // `$!` of the second block is the first server, started in the first.
    let old = util::last_pid(&pids);
    util::run_script(&script(&blocks[1]).replace("old=$!", &format!("old={old}")));
    // The old server stops; the new one answers from then on.
    let pid_line = |answer: String| answer.lines().last().unwrap_or("").to_owned();
    let first = pid_line(first);
    assert!(first.starts_with("hello from pid"), "{first}");
    let second = loop {
        let answer = pid_line(util::http_get(port).expect("the server answers"));
        if answer != first {
            break answer;
        }
    };
    assert!(second.starts_with("hello from pid"), "{second}");
}
