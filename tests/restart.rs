//! `examples/restart.rs`, restarted five times by SIGHUP under a client
//! that never pauses, and three times 100 ms apart while earlier
//! generations still finish long requests: no request fails, and every
//! generation serves. `examples/keep_connections.rs`, restarted five times
//! under clients that keep their connections: none is closed, no byte is
//! lost, and every count goes on. And each way a restart fails leaves no
//! child and no fd behind.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::restart::Restart;
use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
use util::http::{self, Failure, FailureKind, Tally};
use util::{assert_no_child, example, NoLeak};

/// What the client has seen: answers by pid, and every request counted,
/// failures by kind.
#[derive(Default)]
struct Seen {
    by_pid: BTreeMap<u32, usize>,
    tally: Tally,
}

/// Waits for `pid`, a child or an orphan this process reaps, to exit. An
/// orphan whose parent has not exited yet is not this process's child
/// yet: the wait goes on.
fn wait_for_exit(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    util::wait_until(
        || match waitpid(pid, WaitOptions::NOHANG) {
            Ok(reaped) => reaped.is_some(),
            Err(rustix::io::Errno::CHILD) => false,
            Err(e) => panic!("waitpid: {e}"),
        },
        || format!("generation {pid:?} did not exit"),
    );
}

/// Kills every generation of the example, each the leader of a process
/// group of its own, when the test ends, so that none is left behind by a
/// failure: those known, and those a failure left unknown, which are
/// children of a known one, or orphans of this process once it is killed.
struct Generations(Vec<Pid>);

impl Drop for Generations {
    fn drop(&mut self) {
        let mut groups = self.0.clone();
        for _ in 0..1000 {
            for &group in &groups {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                let _ = waitpid(Some(group), WaitOptions::NOHANG);
            }
            groups = children();
            if groups.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The processes whose parent is this one.
fn children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": the name may hold anything.
            let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?;
            (ppid == me).then(|| Pid::from_raw(pid)).flatten()
        })
        .collect()
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

/// The first generation of the example `name`, in a process group of its
/// own, started by no one waiting for it; its address; and the thread
/// that reads what the generations write, which ends when the last one
/// exits.
fn first_generation(
    name: &str,
) -> (
    std::process::Child,
    SocketAddr,
    std::thread::JoinHandle<std::io::Result<u64>>,
) {
    let mut first = Command::new(example(name));
    first
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
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
    // Orphaned generations come to this process, which reaps them.
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let mut first = first.spawn().unwrap();
    let mut stdout = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not an address: {line:?}"))
        .parse()
        .unwrap();
    // Whatever else a generation writes is read, so that none meets a
    // closed pipe.
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (first, addr, drain)
}

/// A client that never pauses, one request after another, each counted.
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = http::get_pid(addr);
                    let mut seen = seen.lock().unwrap();
                    seen.tally.count(&answer);
                    if let Ok(pid) = answer {
                        *seen.by_pid.entry(pid).or_default() += 1;
                    }
                }
            })
        };
        Load {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `pid` has served.
    fn wait_served_by(&self, pid: u32, what: &str) {
        wait_for(&self.seen, what, |seen| seen.by_pid.contains_key(&pid));
    }

    /// Sends SIGHUP to `serving`, and returns the pid of the next
    /// generation once it has served.
    fn restart(&self, serving: u32, generation: usize) -> u32 {
        let before: Vec<u32> = self.seen.lock().unwrap().by_pid.keys().copied().collect();
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
        let new = |seen: &Seen| {
            seen.by_pid
                .keys()
                .copied()
                .find(|pid| !before.contains(pid))
        };
        wait_for(
            &self.seen,
            &format!("generation {generation} never served"),
            |seen| new(seen).is_some(),
        );
        let next = new(&self.seen.lock().unwrap()).unwrap();
        next
    }

    /// Stops the client, once `pid` has served a few more requests.
    fn finish_after(mut self, pid: u32) -> Arc<Mutex<Seen>> {
        let served = self.seen.lock().unwrap().by_pid[&pid];
        wait_for(&self.seen, "the last generation stopped serving", |seen| {
            seen.by_pid[&pid] > served + 10
        });
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.seen.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Shows what the client saw through `restarts`, and asserts that no
/// request failed and that each of the `generations` served.
#[track_caller]
fn assert_every_generation_served(seen: &Seen, restarts: &str, generations: usize) {
    eprintln!(
        "through {restarts}: {}; by pid: {:?}",
        seen.tally, seen.by_pid
    );
    seen.tally.assert_none_failed();
    assert_eq!(
        seen.by_pid.len(),
        generations,
        "every generation serves: {:?}",
        seen.by_pid
    );
}

/// Stops the last generation `serving`, and waits for the first
/// generation's output to end.
fn stop_last(
    serving: u32,
    first: std::process::Child,
    drain: std::thread::JoinHandle<std::io::Result<u64>>,
) {
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(serving);
    drop(first);
    drain.join().unwrap().unwrap();
}

#[test]
fn five_restarts_under_load_fail_no_request() {
    let check = NoLeak::start();
    let (first, addr, drain) = first_generation("restart");
    let mut generations = Generations(vec![Pid::from_raw(first.id() as i32).unwrap()]);
    let load = Load::start(addr);

    let mut serving = first.id();
    // Each SIGHUP goes to a generation that has served already.
    load.wait_served_by(serving, "the first generation never served");
    for generation in 1..=5 {
        let next = load.restart(serving, generation);
        generations.0.push(Pid::from_raw(next as i32).unwrap());
        wait_for_exit(serving);
        serving = next;
    }
    // The last generation goes on serving alone.
    let seen = load.finish_after(serving);
    stop_last(serving, first, drain);
    assert_every_generation_served(&seen.lock().unwrap(), "5 restarts", 6);
    check.assert_unchanged();
}

/// A long request to `examples/restart.rs` (`GET /hold`): its answer
/// begins at once, naming the generation that holds it, and ends once this
/// side has shut down its writing.
struct Held {
    reader: BufReader<TcpStream>,
    held_by: u32,
}

impl Held {
    fn open(addr: SocketAddr) -> Held {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(http::REQUEST_TIMEOUT))
            .unwrap();
        stream.write_all(b"GET /hold HTTP/1.0\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(reader.read_line(&mut head).unwrap() > 0, "{head:?}");
        }
        assert!(head.starts_with("HTTP/1.0 200 "), "{head:?}");
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let held_by = line
            .strip_prefix("held by pid ")
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("not held: {line:?}"));
        Held { reader, held_by }
    }

    /// Ends the request; the pid that answered it to the end.
    fn finish(mut self) -> u32 {
        self.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap();
        rest.strip_prefix("served by pid ")
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("held by {}, then: {rest:?}", self.held_by))
    }
}

#[test]
fn three_restarts_100_ms_apart_while_old_generations_drain() {
    let check = NoLeak::start();
    let (first, addr, drain) = first_generation("restart");
    let mut generations = Generations(vec![Pid::from_raw(first.id() as i32).unwrap()]);
    let load = Load::start(addr);
    let mut serving = first.id();
    load.wait_served_by(serving, "the first generation never served");
    // Before each restart, a request that the generation serving then must
    // finish before it may exit: the first is the first generation's, the
    // only one there is, and it stays until the end.
    let mut held = Vec::new();
    for generation in 1..=3 {
        held.push(Held::open(addr));
        let next = load.restart(serving, generation);
        generations.0.push(Pid::from_raw(next as i32).unwrap());
        serving = next;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(held[0].held_by, first.id());
    assert!(
        !gone(first.id()),
        "the first generation drains through every restart"
    );
    let alive: Vec<u32> = generations
        .0
        .iter()
        .map(|pid| pid.as_raw_nonzero().get() as u32)
        .filter(|&pid| !gone(pid))
        .collect();
    eprintln!("generations running at once after the third restart: {alive:?}");
    // Each long request ends whole, answered by the generation that held
    // it, though later restarts came and went meanwhile.
    for request in held {
        let held_by = request.held_by;
        assert_eq!(request.finish(), held_by);
    }
    // Every generation but the last exits, oldest first.
    for pid in &generations.0[..3] {
        wait_for_exit(pid.as_raw_nonzero().get() as u32);
    }
    let seen = load.finish_after(serving);
    stop_last(serving, first, drain);
    let seen = seen.lock().unwrap();
    assert_every_generation_served(&seen, "3 restarts 100 ms apart", 4);
    check.assert_unchanged();
}

/// What one client of `examples/keep_connections.rs` has seen: its
/// count, every pid that answered it, and its failures.
#[derive(Default)]
struct Conversation {
    count: u64,
    pids: Vec<u32>,
    tally: Tally,
}

/// Reads one answer, "N: LINE (pid P)", and checks that N follows `count`
/// and LINE is `sent`: a byte lost, added or moved shows.
fn answer(reader: &mut BufReader<TcpStream>, count: u64, sent: &str) -> Result<u32, Failure> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => {
            return Err(Failure {
                kind: FailureKind::Empty,
                detail: format!("the server closed the connection after {count} answers"),
            })
        }
        Ok(_) => {}
        Err(e) => return Err(Failure::io("read", &e)),
    }
    let bad = || Failure {
        kind: FailureKind::Bad,
        detail: format!("after {count} answers to {sent:?}: {line:?}"),
    };
    let (n, rest) = line.trim_end().split_once(": ").ok_or_else(bad)?;
    let (echo, pid) = rest.rsplit_once(" (pid ").ok_or_else(bad)?;
    let pid = pid.strip_suffix(')').and_then(|pid| pid.parse().ok());
    match (n.parse::<u64>(), pid) {
        (Ok(n), Some(pid)) if n == count + 1 && echo == sent => Ok(pid),
        _ => Err(bad()),
    }
}

/// One connection to `examples/keep_connections.rs`, kept until `stop`:
/// a line at a time, two lines in one write, and a line in two writes,
/// each answer checked. The first failure ends it.
fn converse(addr: SocketAddr, stop: &AtomicBool, seen: &Mutex<Conversation>) {
    let fail = |failure: Failure| seen.lock().unwrap().tally.fail(&failure);
    let stream = match TcpStream::connect_timeout(&addr, http::REQUEST_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return fail(Failure::io("connect", &e)),
    };
    stream
        .set_read_timeout(Some(http::REQUEST_TIMEOUT))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut turn = 0u64;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let (one, two) = (format!("line {turn}"), format!("and line {turn}b"));
        let (sent, lines) = match turn % 3 {
            0 => (writer.write_all(format!("{one}\n").as_bytes()), vec![one]),
            1 => (
                writer.write_all(format!("{one}\n{two}\n").as_bytes()),
                vec![one, two],
            ),
            _ => (
                writer.write_all(b"line ").and_then(|()| {
                    std::thread::sleep(Duration::from_millis(1));
                    writer.write_all(format!("{turn}\n").as_bytes())
                }),
                vec![one],
            ),
        };
        if let Err(e) = sent {
            return fail(Failure::io("send", &e));
        }
        for line in lines {
            let count = seen.lock().unwrap().count;
            match answer(&mut reader, count, &line) {
                Ok(pid) => {
                    let mut seen = seen.lock().unwrap();
                    seen.count += 1;
                    seen.tally.answered += 1;
                    if !seen.pids.contains(&pid) {
                        seen.pids.push(pid);
                    }
                }
                Err(failure) => return fail(failure),
            }
        }
    }
}

/// Clients of `examples/keep_connections.rs`, each on a thread of its own
/// with one connection, until told to stop.
struct Clients {
    conversations: Arc<Vec<Mutex<Conversation>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(addr: SocketAddr, count: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let conversations: Arc<Vec<Mutex<Conversation>>> =
            Arc::new((0..count).map(|_| Mutex::default()).collect());
        let threads = (0..count)
            .map(|i| {
                let (stop, conversations) = (stop.clone(), conversations.clone());
                std::thread::spawn(move || converse(addr, &stop, &conversations[i]))
            })
            .collect();
        Clients {
            conversations,
            stop,
            threads,
        }
    }

    fn failed(&self) -> bool {
        self.conversations
            .iter()
            .any(|c| c.lock().unwrap().tally.failed() > 0)
    }

    /// Waits until every client has been answered by `pid`, or one failed.
    fn wait_all_served_by(&self, pid: u32, what: &str) {
        util::wait_until(
            || {
                self.conversations.iter().all(|c| {
                    let c = c.lock().unwrap();
                    c.pids.contains(&pid) || c.tally.failed() > 0
                })
            },
            || what.to_owned(),
        );
    }

    /// The first pid a client meets that is not `known`, once one does;
    /// `None` if a client failed first.
    fn next_pid(&self, known: &[u32], what: &str) -> Option<u32> {
        let new = || {
            self.conversations.iter().find_map(|c| {
                let c = c.lock().unwrap();
                c.pids.iter().copied().find(|pid| !known.contains(pid))
            })
        };
        util::wait_until(|| new().is_some() || self.failed(), || what.to_owned());
        new()
    }
}

#[test]
fn connections_and_their_counts_stay_through_five_restarts() {
    const CLIENTS: usize = 8;
    let check = NoLeak::start();
    let (first, addr, drain) = first_generation("keep_connections");
    let mut generations = Generations(vec![Pid::from_raw(first.id() as i32).unwrap()]);
    let clients = Clients::start(addr, CLIENTS);
    let mut serving = first.id();
    clients.wait_all_served_by(serving, "not every client was answered");
    for generation in 1..=5 {
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
        let known: Vec<u32> = generations
            .0
            .iter()
            .map(|pid| pid.as_raw_nonzero().get() as u32)
            .collect();
        // A failure ends the restarts; the counts below show it.
        let what = format!("generation {generation} never answered");
        let Some(next) = clients.next_pid(&known, &what) else {
            break;
        };
        generations.0.push(Pid::from_raw(next as i32).unwrap());
        // Every connection moved: each client is answered by the next.
        let what = format!("not every client moved to generation {generation}");
        clients.wait_all_served_by(next, &what);
        if clients.failed() {
            break;
        }
        wait_for_exit(serving);
        serving = next;
    }
    clients.stop.store(true, Ordering::Relaxed);
    if !clients.failed() {
        for thread in clients.threads {
            thread.join().unwrap();
        }
        stop_last(serving, first, drain);
    }

    let mut answered = 0;
    for (i, conversation) in clients.conversations.iter().enumerate() {
        let c = conversation.lock().unwrap();
        eprintln!(
            "client {i}: count {}, pids {:?}: {}",
            c.count, c.pids, c.tally
        );
        c.tally.assert_none_failed();
        assert_eq!(
            c.pids.len(),
            6,
            "client {i} was answered by every generation"
        );
        answered += c.count;
    }
    eprintln!("{CLIENTS} connections through 5 restarts: {answered} answers, 0 failed");
    check.assert_unchanged();
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
    let mut first = Command::new(example("restart"));
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

/// The test that runs the restart itself under a stand-in service manager.
const MANAGED: &str = "a_restart_by_spawn_or_spawn_async_tells_the_service_manager";

/// In the child of [`MANAGED`]: as `ROLE` says, the generation that
/// restarts, or a next generation.
fn managed_child() {
    if std::env::var("ROLE").unwrap() == "next" {
        // The manager's socket stays; READY=1 goes to the restart's own.
        let manager = std::env::var_os("MANAGER").unwrap();
        assert_eq!(std::env::var_os("NOTIFY_SOCKET"), Some(manager.clone()));
        let ready = std::env::var_os(io_fdpass::notify::READY_SOCKET).unwrap();
        assert!(!ready.is_empty() && ready != manager, "{}", ready.display());
        io_fdpass::notify::ready().unwrap();
        let seen = std::env::var_os("SEEN").unwrap();
        util::wait_until(
            || std::path::Path::new(&seen).exists(),
            || "the restart never saw this generation ready".into(),
        );
        return;
    }
    let seen = util::temp_path("seen");
    let next = || {
        Restart::command(std::env::current_exe().unwrap(), util::child_args(MANAGED))
            .env(util::CHILD_ENV, MANAGED)
            .env("ROLE", "next")
            .env("SEEN", &seen)
            .timeout(Duration::from_secs(120))
    };
    // A ready next generation: its pid for the test, then it may go.
    let pids = std::env::var_os("PIDS").unwrap();
    let let_go = |pid: u32| {
        let mut told = std::fs::read_to_string(&pids).unwrap_or_default();
        told.push_str(&format!("{pid}\n"));
        std::fs::write(&pids, told).unwrap();
        std::fs::write(&seen, "").unwrap();
        let (_, status) = waitpid(
            Some(Pid::from_raw(pid as i32).unwrap()),
            WaitOptions::empty(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(status.exit_status(), Some(0), "the next generation failed");
        std::fs::remove_file(&seen).unwrap();
    };
    let_go(next().spawn().unwrap().pid());
    let e = Restart::command("sh", ["-c", "exit 3"])
        .spawn()
        .unwrap_err();
    assert!(e.to_string().contains("exited with status 3"), "{e}");
    let e = Restart::command("/nonexistent/io-fdpass", [""; 0])
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Refused before anything is said.
    let e = next()
        .env(io_fdpass::notify::READY_SOCKET, "/elsewhere")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let_go(next().spawn_async().await.unwrap().pid());
        let e = Restart::command("sh", ["-c", "exit 3"])
            .spawn_async()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exited with status 3"), "{e}");
        // Dropped while it waits: the next generation is killed, and the
        // manager hears that this one goes on.
        let restart = Restart::command("sleep", ["1000"]).spawn_async();
        let waited = tokio::time::timeout(Duration::from_millis(200), restart).await;
        assert!(waited.is_err(), "a sleep is never ready");
    });
    // Its end waits for the kill on the blocking threads, and what follows.
    drop(runtime);
}

/// `Restart::spawn` and `Restart::spawn_async` under a service manager (a
/// notify socket of the test's standing in for systemd's), run by a child
/// of this test: each restart says `RELOADING=1`, then `MAINPID=` the next
/// generation with `READY=1` when it is ready, or `READY=1` alone when it
/// fails in any way (it exits, cannot be started, the future is dropped).
/// The next generation keeps the manager's `NOTIFY_SOCKET` and says its
/// `READY=1` elsewhere.
#[test]
fn a_restart_by_spawn_or_spawn_async_tells_the_service_manager() {
    if util::is_child(MANAGED) {
        return managed_child();
    }
    let check = NoLeak::start();
    let manager = io_fdpass::notify::Listener::new().unwrap();
    let pids = util::temp_path("pids");
    let mut restarter = Command::new(std::env::current_exe().unwrap());
    restarter
        .args(util::child_args(MANAGED))
        .env(util::CHILD_ENV, MANAGED)
        .env("ROLE", "restarter")
        .env("NOTIFY_SOCKET", manager.path())
        .env("MANAGER", manager.path())
        .env("PIDS", &pids)
        .env_remove(io_fdpass::notify::READY_SOCKET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        restarter.env_remove(name);
    }
    let restarter = restarter.spawn().unwrap();
    let pid = restarter.id();
    let output = std::thread::spawn(move || restarter.wait_with_output().unwrap());
    // Read as they come: the socket queues only a few datagrams.
    let mut said = Vec::new();
    loop {
        let done = output.is_finished();
        match manager.recv(Some(Duration::from_millis(100))).unwrap() {
            Some(message) => {
                assert_eq!(message.pid(), Some(pid), "{message:?}");
                said.push(String::from_utf8(message.bytes().to_vec()).unwrap());
            }
            None if done => break,
            None => {}
        }
    }
    let output = output.join().unwrap();
    util::assert_child_succeeded(MANAGED, &output);
    let next: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|pid| pid.parse().unwrap())
        .collect();
    std::fs::remove_file(&pids).unwrap();
    let [first, second] = next[..] else {
        panic!("two ready next generations, not {next:?}")
    };
    let reloading = "RELOADING=1\nMONOTONIC_USEC=";
    let want = [
        format!("MAINPID={first}\nREADY=1"),
        "READY=1".into(),
        "READY=1".into(),
        format!("MAINPID={second}\nREADY=1"),
        "READY=1".into(),
        "READY=1".into(),
    ];
    assert_eq!(said.len(), 2 * want.len(), "{said:#?}");
    let mut since = 0;
    for (pair, want) in said.chunks(2).zip(&want) {
        let usec: u64 = pair[0]
            .strip_prefix(reloading)
            .and_then(|usec| usec.parse().ok())
            .unwrap_or_else(|| panic!("{said:#?}"));
        assert!(usec >= since, "{said:#?}");
        since = usec;
        assert_eq!(&pair[1], want, "{said:#?}");
    }
    drop(manager);
    check.assert_unchanged();
}

/// A command that listens on `addr` and starts what follows with the
/// socket, as each starter names it: `fdpass listen` by its scheme
/// (`tcp`), `systemd-socket-activate` and `systemfd` `unknown`.
fn starter(name: &str, addr: SocketAddr) -> Command {
    match name {
        "fdpass listen" => {
            let mut command = Command::new(util::fdpass_binary());
            command.args(["listen", &format!("tcp:{addr}"), "--"]);
            command
        }
        "systemd-socket-activate" => {
            let mut command = util::peers::require(name, &["--version"], "systemd");
            command.args(["-l", &addr.to_string()]);
            command
        }
        "systemfd" => {
            let mut command =
                util::peers::require(name, &["--version"], "systemfd (cargo install systemfd)");
            command.args(["-s", &format!("tcp::{addr}"), "--"]);
            command
        }
        other => panic!("no starter {other}"),
    }
}

/// The pid in an answer of `examples/restart.rs`, once it answers on
/// `addr`: the one wait that retries, while the starter starts it.
fn restart_example_answers(addr: SocketAddr, tally: &mut Tally) -> u32 {
    let answer = http::wait_until_answers(addr);
    tally.answered += 1;
    answer
        .rsplit_once("served by pid ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("{answer:?}"))
}

/// Restarts the generation `serving` of `examples/restart.rs` and returns
/// the next one's pid, once it answers: each request in the meantime is
/// counted.
fn restart_the_restart_example(addr: SocketAddr, serving: u32, tally: &mut Tally) -> u32 {
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
    let mut next = serving;
    util::wait_until(
        || {
            let answer = http::get_pid(addr);
            tally.count(&answer);
            next = answer.unwrap_or(serving);
            next != serving
        },
        || format!("no generation after {serving}"),
    );
    next
}

/// Restarts the generation `serving` of `examples/keep_connections.rs`,
/// talking on `connection` meanwhile: the pid of the next one to answer,
/// and every answer checked.
fn restart_keep_connections(
    connection: &mut BufReader<TcpStream>,
    serving: u32,
    count: &mut u64,
    tally: &mut Tally,
) -> u32 {
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
    let mut next = serving;
    util::wait_until(
        || {
            let line = format!("line {}", *count + 1);
            let sent = connection
                .get_mut()
                .write_all(format!("{line}\n").as_bytes());
            let answer = sent
                .map_err(|e| Failure::io("send", &e))
                .and_then(|()| answer(connection, *count, &line));
            tally.count(&answer);
            match answer {
                Ok(pid) => {
                    *count += 1;
                    next = pid;
                    next != serving
                }
                Err(failure) => panic!("through the restart of {serving}: {failure}"),
            }
        },
        || format!("no generation after {serving}"),
    );
    next
}

#[test]
fn the_examples_adopt_their_listener_from_every_starter() {
    let check = NoLeak::start();
    for name in ["systemd-socket-activate", "fdpass listen", "systemfd"] {
        for example_name in ["restart", "keep_connections"] {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Orphaned generations come to this process, which reaps them.
            // SAFETY: prctl with integer arguments only.
            assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
            // No address: an example that did not adopt the socket would
            // bind one of its own elsewhere, and never answer on `addr`.
            let started = starter(name, addr)
                .arg(example(example_name))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap();
            let mut generations = Generations(vec![Pid::from_raw(started.id() as i32).unwrap()]);
            let mut tally = Tally::default();
            let (first, last) = if example_name == "restart" {
                let first = restart_example_answers(addr, &mut tally);
                generations.0.push(Pid::from_raw(first as i32).unwrap());
                (first, restart_the_restart_example(addr, first, &mut tally))
            } else {
                let stream = http::wait_until_connects(addr);
                stream
                    .set_read_timeout(Some(http::REQUEST_TIMEOUT))
                    .unwrap();
                let mut connection = BufReader::new(stream);
                connection.get_mut().write_all(b"line 1\n").unwrap();
                let first = answer(&mut connection, 0, "line 1").unwrap();
                tally.answered += 1;
                generations.0.push(Pid::from_raw(first as i32).unwrap());
                let mut count = 1;
                let last = restart_keep_connections(&mut connection, first, &mut count, &mut tally);
                (first, last)
            };
            generations.0.push(Pid::from_raw(last as i32).unwrap());
            eprintln!("{example_name} under {name}: pid {first}, then {last}: {tally}");
            tally.assert_none_failed();
            kill_process(Pid::from_raw(last as i32).unwrap(), Signal::TERM).unwrap();
            drop((started, generations));
        }
    }
    check.assert_unchanged();
}
