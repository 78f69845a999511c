//! The README's zero-downtime restart: a holder keeps the listening socket,
//! and an HTTP server is restarted five times while a client makes requests
//! without pause. Not one request may be refused or fail.
#![cfg(unix)]

mod util;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use util::http::{self, Tally};
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

/// What the client has seen so far: answers and failures, counted by
/// kind, and the pid of each generation that answered, in the order of
/// their first answers.
#[derive(Debug, Default)]
struct Seen {
    tally: Tally,
    served_by: Vec<String>,
}

/// How many answers the client gets between two steps of a restart.
const PACE: usize = 200;

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
    let mut pids = vec![server.id().to_string()];
    // The first answer shows the server is up: the one request that may
    // be retried, while the first generation starts. From then on each
    // request has one attempt, and every failure counts.
    let _ = http::wait_until_answers(util::local(port));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = std::thread::spawn({
        let (stop, seen) = (stop.clone(), seen.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = http::get(util::local(port));
                let mut seen = seen.lock().unwrap();
                seen.tally.count(&answer);
                if let Ok(answer) = answer {
                    let pid = answer.rsplit(' ').next().unwrap_or("").trim().to_owned();
                    if !seen.served_by.contains(&pid) {
                        seen.served_by.push(pid);
                    }
                }
            }
        }
    });
    // Steps are paced by what the client has seen, never by a clock.
    let wait_for = |what: &str, done: &dyn Fn(&Seen) -> bool| {
        util::wait_until(
            || done(&seen.lock().unwrap()),
            || format!("{what}; the client saw {:?}", seen.lock().unwrap()),
        );
    };
    let more = |what: &str| {
        let now = seen.lock().unwrap().tally.answered;
        wait_for(what, &|seen| seen.tally.answered >= now + PACE);
    };

    more("the first generation answers the client");
    for _ in 0..5 {
        // The new generation first; once it has answered, the old one is
        // told to stop: it finishes the request in hand, and what waits in
        // the queue goes to the new one.
        let next = start_server(&holder);
        let pid = next.id().to_string();
        pids.push(pid.clone());
        wait_for("the new generation answers", &|seen| {
            seen.served_by.contains(&pid)
        });
        assert!(terminate(&mut server).success());
        server = next;
        assert_eq!(holder.list(), ["web"], "the holder still holds the socket");
        more("the new generation goes on answering alone");
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(terminate(&mut server).success());

    let seen = seen.lock().unwrap();
    println!(
        "restart test: {}; served by {} generations",
        seen.tally,
        seen.served_by.len()
    );
    seen.tally.assert_none_failed();
    assert_eq!(seen.served_by, pids, "every generation served, in order");
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
    let first = http::wait_until_answers(util::local(port));
    // `$!` of the second block is the first server, started in the first.
    let old = util::last_pid(&pids);
    util::run_script(&script(&blocks[1]).replace("old=$!", &format!("old={old}")));
    // The old server stops; the new one answers from then on.
    let pid_line = |answer: String| answer.lines().last().unwrap_or("").to_owned();
    let first = pid_line(first);
    assert!(first.starts_with("hello from pid"), "{first}");
    // Once the first has answered, no request may fail.
    let second = loop {
        let answer = http::get(util::local(port)).unwrap_or_else(|e| panic!("{e}"));
        let answer = pid_line(answer);
        if answer != first {
            break answer;
        }
    };
    assert!(second.starts_with("hello from pid"), "{second}");
}
