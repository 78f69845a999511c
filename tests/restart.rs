//! `examples/restart.rs`, restarted five times by SIGHUP under a client
//! that never pauses: no request fails, and every generation serves. And
//! each way a restart fails leaves no child and no fd behind.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::restart::Restart;
use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
use util::http::{self, Failure, FailureKind, Tally};
use util::NoLeak;

/// The example's binary, which `cargo test` builds beside the tests.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/restart");
    assert!(
        path.exists(),
        "{} is missing: run the tests with cargo test --features tokio, which builds the examples",
        path.display()
    );
    path
}

/// What the client has seen: answers by pid, and every request counted,
/// failures by kind.
#[derive(Default)]
struct Seen {
    by_pid: BTreeMap<u32, usize>,
    tally: Tally,
}

/// One request, one attempt: the pid that answered it, or the failure.
fn request(addr: SocketAddr) -> Result<u32, Failure> {
    let reply = http::get(addr)?;
    reply
        .rsplit_once("served by pid ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .ok_or_else(|| Failure {
            kind: FailureKind::Bad,
            detail: format!("a reply without a pid: {reply:?}"),
        })
}

/// Waits for `pid`, a child or an orphan this process reaps, to exit.
fn wait_for_exit(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    util::wait_until(
        || waitpid(pid, WaitOptions::NOHANG).unwrap().is_some(),
        || format!("generation {pid:?} did not exit"),
    );
}

/// Kills every generation of the example, each the leader of a process
/// group of its own, when the test ends, so that none is left behind by a
/// failure.
struct Generations(Vec<Pid>);

impl Drop for Generations {
    fn drop(&mut self) {
        for &group in &self.0 {
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        while waitpid(None, WaitOptions::NOHANG).is_ok_and(|reaped| reaped.is_some()) {}
    }
}

/// Waits until `ready` holds of what the client has seen.
fn wait_for(seen: &Mutex<Seen>, what: &str, ready: impl Fn(&Seen) -> bool) {
    util::wait_until(
        || ready(&seen.lock().unwrap()),
        || {
            let seen = seen.lock().unwrap();
            format!("{what}: {}; by pid {:?}", seen.tally, seen.by_pid)
        },
    );
}

/// The first generation of the example, in a process group of its own,
/// started by no one waiting for it.
fn first_generation() -> std::process::Child {
    let mut first = Command::new(example());
    first
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    // The first generation is started by no one waiting for it.
    for name in [
        "LISTEN_PID",
        "LISTEN_PIDFDID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "LISTEN_FDS_FIRST_FD",
        "NOTIFY_SOCKET",
    ] {
        first.env_remove(name);
    }
    first.spawn().unwrap()
}

#[test]
fn five_restarts_under_load_fail_no_request() {
    let check = NoLeak::start();
    // Orphaned generations come to this process, which reaps them.
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let mut first = first_generation();
    let mut generations = Generations(vec![Pid::from_raw(first.id() as i32).unwrap()]);
    let mut stdout = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not an address: {line:?}"))
        .to_owned();
    // Whatever else a generation writes is read, so that none meets a
    // closed pipe; the reading ends when the last generation exits.
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr: SocketAddr = addr.parse().unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = request(addr);
                let mut seen = seen.lock().unwrap();
                seen.tally.count(&answer);
                if let Ok(pid) = answer {
                    *seen.by_pid.entry(pid).or_default() += 1;
                }
            }
        })
    };

    let mut serving = first.id();
    // Each SIGHUP goes to a generation that has served already.
    wait_for(&seen, "the first generation never served", |seen| {
        seen.by_pid.contains_key(&serving)
    });
    for generation in 1..=5 {
        let before: Vec<u32> = seen.lock().unwrap().by_pid.keys().copied().collect();
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
        // The next generation has served once the client meets a new pid.
        let new = |seen: &Seen| {
            seen.by_pid
                .keys()
                .copied()
                .find(|pid| !before.contains(pid))
        };
        wait_for(
            &seen,
            &format!("generation {generation} never served"),
            |seen| new(seen).is_some(),
        );
        let next = new(&seen.lock().unwrap()).unwrap();
        generations.0.push(Pid::from_raw(next as i32).unwrap());
        wait_for_exit(serving);
        serving = next;
    }
    // The last generation goes on serving alone.
    let served = seen.lock().unwrap().by_pid[&serving];
    wait_for(&seen, "the last generation stopped serving", |seen| {
        seen.by_pid[&serving] > served + 10
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(serving);
    drop(first);
    drain.join().unwrap().unwrap();

    let seen = seen.lock().unwrap();
    eprintln!(
        "through 5 restarts: {}; by pid: {:?}",
        seen.tally, seen.by_pid
    );
    seen.tally.assert_none_failed();
    assert_eq!(
        seen.by_pid.len(),
        6,
        "every generation serves: {:?}",
        seen.by_pid
    );
    check.assert_unchanged();
}

/// Asserts that this process has no child left, running or unreaped.
#[track_caller]
fn assert_no_child() {
    match waitpid(None, WaitOptions::NOHANG) {
        Err(rustix::io::Errno::CHILD) => {}
        other => panic!("a child is left behind: {other:?}"),
    }
}

/// The pid an error's message names ("(pid N)").
fn pid_in(e: &std::io::Error) -> u32 {
    let text = e.to_string();
    let (_, rest) = text.split_once("(pid ").expect("a pid in the message");
    rest.split(')').next().unwrap().parse().unwrap()
}

/// A listener to hand over in the tests of the failures.
fn some_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn a_missing_program_is_not_found_and_leaves_nothing() {
    let check = NoLeak::start();
    let listener = some_listener();
    for program in [
        "io-fdpass-no-such-program",
        "/nonexistent/io-fdpass-program",
    ] {
        let e = Restart::command(program, ["x"])
            .fd("http", &listener)
            .unwrap()
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{program}: {e}");
        assert_no_child();
    }
    drop(listener);
    check.assert_unchanged();
}

#[test]
fn a_child_that_exits_before_ready_is_an_error() {
    let check = NoLeak::start();
    let listener = some_listener();
    let e = Restart::command("sh", ["-c", "exit 3"])
        .fd("http", &listener)
        .unwrap()
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("exited with status 3"), "{e}");
    assert_no_child();
    drop(listener);
    check.assert_unchanged();
}

#[test]
fn a_child_never_ready_is_killed_at_the_timeout() {
    let check = NoLeak::start();
    let listener = some_listener();
    let e = Restart::command("sleep", ["1000"])
        .fd("http", &listener)
        .unwrap()
        .timeout(Duration::from_millis(200))
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    // Killed and reaped: the pid is gone.
    let pid = Pid::from_raw(pid_in(&e) as i32).unwrap();
    assert_eq!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    );
    assert_no_child();
    drop(listener);
    check.assert_unchanged();
}

/// Whether `pid` is gone: no such process, or a zombie, which holds no
/// fds.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Kills `pid` when dropped, if it still runs.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !gone(self.0) {
            let _ = kill_process(Pid::from_raw(self.0 as i32).unwrap(), Signal::KILL);
        }
    }
}

#[test]
fn a_timed_out_restart_kills_the_workers_the_generation_forked() {
    let check = NoLeak::start();
    let listener = some_listener();
    let addr = listener.local_addr().unwrap();
    let dir = util::temp_path("worker");
    std::fs::create_dir(&dir).unwrap();
    let worker_file = dir.join("worker");
    // The next generation forks a worker that inherits the listener (fd 3)
    // and writes its pid, then waits, and never says READY=1.
    let script = format!(
        "sleep 1000 & echo $! > '{0}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 1000",
        worker_file.display()
    );
    let e = Restart::command("sh", ["-c", &script])
        .fd("http", &listener)
        .unwrap()
        .timeout(Duration::from_secs(2))
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let worker: u32 = std::fs::read_to_string(&worker_file)
        .expect("the worker was forked before the timeout")
        .trim()
        .parse()
        .unwrap();
    // Killed here if the restart left it, so that a failure leaves nothing.
    let _leftover = KillOnDrop(worker);
    // SIGKILL is on its way to it; it ends without running again.
    util::wait_until(
        || gone(worker),
        || format!("the worker {worker} of a failed generation lives on"),
    );
    // Reaped here if it was orphaned to this process.
    let _ = waitpid(Pid::from_raw(worker as i32), WaitOptions::NOHANG);
    assert_no_child();
    // No one else holds the listener: once this process closes it, its
    // address is free to listen on again.
    drop(listener);
    std::net::TcpListener::bind(addr).expect("the listener is held by no one");
    std::fs::remove_dir_all(&dir).unwrap();
    check.assert_unchanged();
}

#[test]
fn a_second_restart_at_once_is_busy() {
    let check = NoLeak::start();
    let listener = some_listener();
    let dir = util::temp_path("busy");
    std::fs::create_dir(&dir).unwrap();
    let (started, go) = (dir.join("started"), dir.join("go"));
    // The first restart waits for a child that says it runs, then exits
    // once told to.
    let script = format!(
        ": > '{}'; while [ ! -e '{}' ]; do sleep 0.01; done",
        started.display(),
        go.display()
    );
    let first = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            Restart::command("sh", ["-c", &script])
                .fd("http", &listener)
                .unwrap()
                .timeout(Duration::from_secs(600))
                .spawn()
        });
        util::wait_until(
            || started.exists(),
            || "the first restart never began".into(),
        );
        // Its child runs, so the first restart is under way: a second one
        // is refused before it starts anything.
        let e = Restart::command("/nonexistent/io-fdpass-program", ["x"])
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceBusy, "{e}");
        std::fs::write(&go, "").unwrap();
        first.join().unwrap()
    });
    let e = first.unwrap_err();
    assert!(e.to_string().contains("exited with status 0"), "{e}");
    assert_no_child();
    // Once the first is over, a restart may run again.
    let e = Restart::command("/nonexistent/io-fdpass-program", ["x"])
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_no_child();
    std::fs::remove_dir_all(&dir).unwrap();
    drop(listener);
    check.assert_unchanged();
}

/// The next message on `manager`, which must come from `pid`: its text.
fn message_from(manager: &io_fdpass::notify::Listener, pid: u32) -> String {
    let message = manager
        .recv(Some(io_fdpass_test_support::WAIT_TIMEOUT))
        .unwrap()
        .expect("a message to the service manager");
    assert_eq!(message.pid(), Some(pid), "{message:?}");
    String::from_utf8(message.bytes().to_vec()).unwrap()
}

/// Under a service manager (a notify socket of the test's standing in for
/// systemd's): each restart says `RELOADING=1` with `MONOTONIC_USEC=`, then
/// `MAINPID=` the next generation with `READY=1`, both from the generation
/// that restarts, and nothing else. The next generation keeps the
/// manager's `NOTIFY_SOCKET`, so the second restart, from generation 2,
/// goes as the first did.
#[test]
fn under_a_service_manager_mainpid_follows_each_generation() {
    let check = NoLeak::start();
    let manager = io_fdpass::notify::Listener::new().unwrap();
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let mut first = Command::new(example());
    first
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .env("NOTIFY_SOCKET", manager.path())
        .env_remove(io_fdpass::notify::READY_SOCKET);
    for name in [
        "LISTEN_PID",
        "LISTEN_PIDFDID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        first.env_remove(name);
    }
    let first = first.spawn().unwrap();
    let mut main = first.id();
    let mut generations = Generations(vec![Pid::from_raw(main as i32).unwrap()]);
    assert_eq!(message_from(&manager, main), "READY=1");
    for _ in 0..2 {
        let asked = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let asked = asked.tv_sec as u64 * 1_000_000 + asked.tv_nsec as u64 / 1_000;
        kill_process(Pid::from_raw(main as i32).unwrap(), Signal::HUP).unwrap();
        let reloading = message_from(&manager, main);
        let usec: u64 = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{reloading:?}"))
            .parse()
            .unwrap();
        assert!(usec >= asked, "MONOTONIC_USEC={usec} is before the SIGHUP");
        let handover = message_from(&manager, main);
        let next: u32 = handover
            .strip_prefix("MAINPID=")
            .and_then(|rest| rest.strip_suffix("\nREADY=1"))
            .unwrap_or_else(|| panic!("{handover:?}"))
            .parse()
            .unwrap();
        assert_ne!(next, main);
        generations.0.push(Pid::from_raw(next as i32).unwrap());
        wait_for_exit(main);
        main = next;
    }
    // The generations said nothing more: the next one's READY=1 went to
    // the generation that started it, not here.
    assert_eq!(manager.recv(Some(Duration::ZERO)).unwrap(), None);
    kill_process(Pid::from_raw(main as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(main);
    drop((first, manager));
    check.assert_unchanged();
}
