//! `examples/restart.rs`, restarted five times by SIGHUP under a client
//! that never pauses: no request fails, and every generation serves. And
//! each way a restart fails leaves no child and no fd behind.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// Kills every generation of the example, which all share one process
/// group, when the test ends, so that none is left behind by a failure.
struct Generations(Pid);

impl Drop for Generations {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process_group(self.0, Signal::KILL);
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

/// Starts the example's first generation, in a process group of its own,
/// and reads the address it listens on. Returns it, the guard that kills
/// every generation, that address, and the thread that reads whatever
/// else the generations write, so that none meets a closed pipe; the
/// reading ends when the last generation exits.
fn start_first_generation() -> (Child, Generations, SocketAddr, JoinHandle<io::Result<u64>>) {
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
    let mut first = first.spawn().unwrap();
    let generations = Generations(Pid::from_raw(first.id() as i32).unwrap());
    let mut stdout = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not an address: {line:?}"))
        .to_owned();
    let drain = std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    (first, generations, addr.parse().unwrap(), drain)
}

/// A client that makes requests at `addr` without pause until `stop`, and
/// counts in `seen` every answer by pid and every failure by kind.
fn client(addr: SocketAddr, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
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
}

#[test]
fn five_restarts_under_load_fail_no_request() {
    let check = NoLeak::start();
    // Orphaned generations come to this process, which reaps them.
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let (first, _generations, addr, drain) = start_first_generation();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = client(addr, seen.clone(), stop.clone());

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
fn pid_in(e: &io::Error) -> u32 {
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
