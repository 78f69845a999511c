//! `fdpass hold` and its clients, end to end: the tool's commands and the
//! library's `holder::Client` against a real holder, against fake holders
//! and squatters, through restarts by SIGHUP and by `kill -9` under a
//! stand-in for systemd's fd store, and with slow and silent clients.
//! After each hostile case the fd counts of holder and client are checked.
#![cfg(unix)]

mod util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::holder::Client;
use io_fdpass_test_support::{NoLeak, OpensFds};
use util::http::{Failure, Tally};
use util::{fails, fdpass, output, s, stderr, success, with_files, Holder, TempDir};

fn file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The JSON objects of `fdpass list --json`, one line each.
fn listed(holder: &str) -> Vec<String> {
    let json = success(fdpass().args(["list", "--json", holder]));
    json.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(|line| line.trim().trim_end_matches(',').to_owned())
        .collect()
}

/// The value of `key` in a JSON object line of [`listed`].
fn field<'a>(object: &'a str, key: &str) -> &'a str {
    let start = object
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {object}"))
        + key.len()
        + 3;
    let rest = &object[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"')
}

#[test]
fn store_fetch_take_list_and_drop() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("holder");
    let holder = Holder::start(&dir, &["--max-names", "3"]);
    let data = file(&dir, "data", "held text");
    let store = |name: &str| {
        output(&mut with_files(
            &["store", holder.sock(), name, "3"],
            &[&data],
        ))
    };
    for name in ["a", "b", "c"] {
        assert!(store(name).status.success());
    }
    let refused = store("d");
    assert_eq!(refused.status.code(), Some(77), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--max-names"),
        "{}",
        stderr(&refused)
    );
    assert!(
        store("a").status.success(),
        "replacing a name is no new name"
    );
    assert_eq!(holder.list(), ["a", "b", "c"]);

    // What each is, who stored it and when.
    let lines = success(fdpass().args(["list", holder.sock()]));
    let first = lines.lines().next().unwrap();
    assert!(first.starts_with("a  file "), "{first}");
    assert!(first.contains(s(&data)), "{first}");
    assert!(
        first.contains(&format!("uid {}", rustix::process::getuid().as_raw())),
        "{first}"
    );
    assert!(first.contains("for as long as the holder runs"), "{first}");
    let objects = listed(holder.sock());
    assert_eq!(objects.len(), 3);
    assert_eq!(field(&objects[0], "name"), "a");
    assert_eq!(field(&objects[0], "kind"), "file");
    assert_eq!(field(&objects[0], "address"), "null");
    assert_eq!(field(&objects[0], "expires_at"), "null");
    assert!(field(&objects[0], "stored_at").parse::<u64>().unwrap() > 1_700_000_000);

    // Fetch keeps the holder's copies; take removes them.
    let show = r#"cat <&3; cat <&4; echo " $LISTEN_FDS $LISTEN_FDNAMES""#;
    let shown = success(fdpass().args(["fetch", holder.sock(), "b", "a", "--", "sh", "-c", show]));
    assert_eq!(shown, "held textheld text 2 b:a\n");
    assert_eq!(holder.list(), ["a", "b", "c"]);
    let shown = success(fdpass().args([
        "fetch",
        "--take",
        holder.sock(),
        "c",
        "--",
        "sh",
        "-c",
        "cat <&3",
    ]));
    assert_eq!(shown, "held text");
    assert_eq!(holder.list(), ["a", "b"]);
    fails(
        fdpass().args(["fetch", "--take", holder.sock(), "c", "--", "true"]),
        66,
        "no fd named c",
    );
    // All or nothing: one missing name fetches none and takes none.
    fails(
        fdpass().args(["fetch", "--take", holder.sock(), "a", "zz", "--", "true"]),
        66,
        "no fd named zz",
    );
    assert_eq!(holder.list(), ["a", "b"]);

    success(fdpass().args(["drop", holder.sock(), "a"]));
    assert_eq!(holder.list(), ["b"]);
    fails(
        fdpass().args(["drop", holder.sock(), "a"]),
        66,
        "no fd named a",
    );
}

/// A client that connects and never sends a byte, or sends one now and
/// then.
fn idle_clients(socket: &Path, count: usize) -> Vec<UnixStream> {
    (0..count)
        .map(|i| {
            let stream = UnixStream::connect(socket).unwrap();
            if i % 2 == 1 {
                // Half of them start a request they never finish.
                (&stream).write_all(b"li").unwrap();
            }
            stream
        })
        .collect()
}

#[test]
fn a_thousand_silent_and_slow_clients_hold_up_no_one() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("silent");
    let holder = Holder::start(&dir, &["--client-timeout", "10m"]);
    let data = file(&dir, "data", "x");
    success(&mut with_files(
        &["store", holder.sock(), "keep", "3"],
        &[&data],
    ));
    let before = holder.fd_count();
    let idle = idle_clients(&holder.socket, 1000);
    // Each is connected and has its greeting: the holder took them all.
    let mut greeting = [0; 14];
    for stream in &idle {
        (&*stream).read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"fdpass-hold 1\n");
    }
    // Another client, of the same user, is answered meanwhile.
    assert_eq!(holder.list(), ["keep"]);
    let shown =
        success(fdpass().args(["fetch", holder.sock(), "keep", "--", "sh", "-c", "cat <&3"]));
    assert_eq!(shown, "x");
    // Still connected, still unanswered.
    for stream in &idle[..10] {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0];
        match (&*stream).read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an idle client was answered or let go: {other:?}"),
        }
    }
    drop(idle);
    holder.wait_for_fd_count(before);
}

/// Connects to the holder and reads its greeting: once this returns, the
/// holder has accepted the connection and its deadline runs.
fn greeted(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    let mut greeting = [0; 14];
    (&stream).read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"fdpass-hold 1\n");
    stream
}

/// Whether the holder has closed `stream`, without waiting: true at its
/// end, false while it is open and silent.
fn closed(stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        other => panic!("a client that sent no request was answered: {other:?}"),
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Reads `stream` to its end, which must come without a byte of answer:
/// the holder cut the client off. (A reset is such an end too: the holder
/// closed it with bytes of the request unread.) The read timeout only
/// keeps a broken holder from hanging the test.
fn assert_cut_off_unanswered(stream: &UnixStream) {
    stream
        .set_read_timeout(Some(io_fdpass_test_support::WAIT_TIMEOUT))
        .unwrap();
    let mut answer = Vec::new();
    match (&*stream).read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the holder never cut the client off: {e}"),
    }
    assert!(
        answer.is_empty(),
        "the client was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_stalled_client_is_cut_off_and_holds_up_no_one() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("stalled");
    let holder = Holder::start(&dir, &["--client-timeout", "3s"]);
    let before = holder.fd_count();
    let stalled = greeted(&holder.socket);
    (&stalled).write_all(b"li").unwrap();
    // A client that connected after it is served while it is stuck ...
    assert!(Client::new(&holder.socket).list().unwrap().is_empty());
    assert!(!closed(&stalled), "the stalled client was let go too soon");
    // ... and at its deadline the holder cuts it off, unanswered.
    assert_cut_off_unanswered(&stalled);
    drop(stalled);
    holder.wait_for_fd_count(before);
}

/// A client that sends a byte of its request every few milliseconds, far
/// more often than the deadline, would be waited for forever by a timeout
/// per read. With one deadline for the whole request it is cut off before
/// it can end a request sent slower than the deadline allows.
///
/// The test reads no clock: what shows that the trickler's whole deadline
/// has passed is the holder itself cutting off a silent client that
/// connected after it, and then a second one, connected after the first
/// was cut off (by then the holder has acted on the trickler's deadline,
/// which fell a whole deadline earlier). Only then may the trickler end
/// its line; it must get no answer.
#[test]
fn a_trickling_client_cannot_extend_its_deadline() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("trickle");
    let holder = Holder::start(&dir, &["--client-timeout", "1s"]);
    let before = holder.fd_count();
    let trickler = greeted(&holder.socket);
    let mut silent = greeted(&holder.socket);
    let mut silent_cut_off = 0;
    let mut sent = 0;
    while silent_cut_off < 2 {
        if (&trickler).write_all(b"l").is_err() {
            // Cut off already: its deadline came before the silent ones'.
            break;
        }
        sent += 1;
        if closed(&silent) {
            silent_cut_off += 1;
            silent = greeted(&holder.socket);
        }
        // The pace of the trickle: only how many bytes it takes depends
        // on it, not what the test shows.
        std::thread::sleep(Duration::from_millis(10));
    }
    // The end of its line, if it can still send it.
    let _ = (&trickler).write_all(b"\n");
    assert_cut_off_unanswered(&trickler);
    println!("the trickler sent {sent} bytes before it was cut off");
    drop((trickler, silent));
    holder.wait_for_fd_count(before);
}

#[test]
fn the_holder_survives_misbehaving_clients() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("misbehave");
    let holder = Holder::start(&dir, &[]);
    let data = file(&dir, "data", "x");
    success(&mut with_files(
        &["store", holder.sock(), "keep", "3"],
        &[&data],
    ));
    let before = holder.fd_count();

    let connect = || UnixStream::connect(&holder.socket).unwrap();
    let answer = |c: UnixStream| {
        let mut text = String::new();
        let _ = (&c).read_to_string(&mut text);
        text.strip_prefix("fdpass-hold 1\n")
            .unwrap_or(&text)
            .to_owned()
    };
    let f = std::fs::File::open(&data).unwrap();

    let c = connect();
    (&c).write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(answer(c).starts_with("error invalid unknown request"));
    let c = connect();
    let _ = (&c).write_all(&[0xa5; 100_000]);
    assert!(answer(c).contains("at most"));
    let c = connect();
    io_fdpass::send_fds(&c, b"store flood\n", &[f.as_fd(); 253]).unwrap();
    assert!(answer(c).contains("at most one fd"));
    let c = connect();
    io_fdpass::send_fds(&c, b"list\n", &[f.as_fd(); 3]).unwrap();
    assert!(answer(c).starts_with("error invalid"));
    let c = connect();
    io_fdpass::send_fds(&c, b"store fdpass-hold\n", &[f.as_fd()]).unwrap();
    assert!(answer(c).contains("the holder's own name"));
    let c = connect();
    io_fdpass::send_fds(&c, b"store hal", &[f.as_fd()]).unwrap();
    drop(c);
    drop(connect());
    let c = connect();
    (&c).write_all(b"fetch keep\n").unwrap();
    drop(c);
    // `fdpass send` is told to use store, and the fd is not kept.
    fails(
        fdpass().args(["send", holder.sock(), "0"]),
        64,
        "fdpass store",
    );

    assert_eq!(holder.list(), ["keep"]);
    holder.wait_for_fd_count(before);
}

#[test]
fn lifetimes_end_by_time_and_by_exit() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("lifetimes");
    let holder = Holder::start(&dir, &[]);
    let data = file(&dir, "data", "x");
    let before = holder.fd_count();
    success(&mut with_files(
        &["store", holder.sock(), "hour", "3", "--ttl", "1h"],
        &[&data],
    ));
    success(&mut with_files(
        &["store", holder.sock(), "brief", "3", "--ttl", "1"],
        &[&data],
    ));
    let mut worker = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = worker.id().to_string();
    success(&mut with_files(
        &["store", holder.sock(), "worker", "3", "--until-exit", &pid],
        &[&data],
    ));
    fails(
        &mut with_files(
            &[
                "store",
                holder.sock(),
                "ghost",
                "3",
                "--until-exit",
                "999999999",
            ],
            &[&data],
        ),
        66,
        "no process 999999999",
    );

    util::wait_until(
        || !holder.list().contains(&"brief".to_owned()),
        || "brief was never dropped".into(),
    );
    let objects = listed(holder.sock());
    let hour = objects.iter().find(|o| field(o, "name") == "hour").unwrap();
    let lasts = field(hour, "expires_at").parse::<u64>().unwrap()
        - field(hour, "stored_at").parse::<u64>().unwrap();
    assert!((3600..=3601).contains(&lasts), "{hour}");
    let kept = objects
        .iter()
        .find(|o| field(o, "name") == "worker")
        .unwrap();
    assert_eq!(field(kept, "until_exit"), pid);
    let text = success(fdpass().args(["list", holder.sock()]));
    assert!(
        text.contains(&format!("until process {pid} exits")),
        "{text}"
    );
    assert!(
        text.contains("(in 59m") || text.contains("(in 1h"),
        "{text}"
    );

    worker.kill().unwrap();
    worker.wait().unwrap();
    util::wait_until(
        || holder.list() == ["hour"],
        || format!("the worker's fd outlived it: {:?}", holder.list()),
    );
    success(fdpass().args(["drop", holder.sock(), "hour"]));
    holder.wait_for_fd_count(before);
}

#[test]
fn from_takes_over_every_fd_of_a_running_holder() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("from");
    let old = Holder::start(&dir, &[]);
    let data = file(&dir, "data", "carried over");
    success(&mut with_files(
        &["store", old.sock(), "a", "3", "--ttl", "1h"],
        &[&data],
    ));
    success(&mut with_files(&["store", old.sock(), "b", "3"], &[&data]));
    let new_socket = dir.join("new.sock");
    let mut new = Holder {
        child: fdpass()
            .args(["hold", s(&new_socket), "--from", old.sock()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
        socket: new_socket,
    };
    new.wait_until_serving();
    assert_eq!(new.list(), ["a", "b"]);
    assert_eq!(listed(new.sock()), listed(old.sock()));
    let shown = success(fdpass().args(["fetch", new.sock(), "a", "--", "sh", "-c", "cat <&3"]));
    assert_eq!(shown, "carried over");
    drop(old);
    assert_eq!(new.list(), ["a", "b"]);
    util::terminate(&mut new.child);
    std::mem::forget(new);
}

#[test]
fn the_socket_file_is_removed_only_while_it_is_the_holders() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("ownfile");
    let mut holder = Holder::start(&dir, &[]);
    util::terminate(&mut holder.child);
    assert!(!holder.socket.exists(), "its own file stays behind");
    std::mem::forget(holder);

    let mut holder = Holder::start(&dir, &[]);
    // Another takes the path while it runs.
    std::fs::remove_file(&holder.socket).unwrap();
    let successor = UnixListener::bind(&holder.socket).unwrap();
    util::terminate(&mut holder.child);
    assert!(
        holder.socket.exists(),
        "the successor's socket file was removed"
    );
    drop(successor);
    std::mem::forget(holder);
}

/// Stops the holder's user-visible log reader at the n-th "holding" line.
fn wait_for_starts(starts: &AtomicUsize, n: usize) {
    util::wait_until(
        || starts.load(Ordering::SeqCst) >= n,
        || {
            format!(
                "the holder started {} times, not {n}",
                starts.load(Ordering::SeqCst)
            )
        },
    );
}

/// Starts `fdpass -v hold ARGS` with `env`, counting the times it says it
/// is holding (each start of an image).
fn logged_holder(
    program: &Path,
    socket: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Arc<AtomicUsize>) {
    let mut child = Command::new(program)
        .args(["-v", "hold", s(socket)])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    let log = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("hold: holding") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (child, starts)
}

#[test]
fn sighup_upgrades_in_place_under_a_client_that_never_pauses() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("upgrade");
    let binary = util::fdpass_for_anyone(&dir);
    let socket = dir.join("h.sock");
    let (mut child, starts) = logged_holder(&binary, &socket, &[], &[]);
    wait_for_starts(&starts, 1);
    let data = file(&dir, "data", "still here");
    let client = Client::new(&socket).timeout(Duration::from_secs(60));
    let file = std::fs::File::open(&data).unwrap();
    client
        .store_with_lifetime(
            "cfg",
            &file,
            io_fdpass::holder::protocol::Lifetime::forever().ttl(Duration::from_secs(3600)),
        )
        .unwrap();
    let before = client.entries().unwrap();

    // One attempt per fetch: a connection refused, reset or cut short
    // while the holder executes its new image is a failure, counted by kind.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let hammer = {
        let (stop, tally, client) = (stop.clone(), tally.clone(), client.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let fetched = client.fetch("cfg").map_err(|e| Failure::io("fetch", &e));
                tally.lock().unwrap().count(&fetched);
            }
        })
    };
    let answered = || tally.lock().unwrap().answered;
    let pid = rustix::process::Pid::from_child(&child);
    for round in 2..=4 {
        // A newer binary installed at the same path, as a package upgrade
        // does: a new file renamed over the old.
        let fresh = dir.join("fdpass.new");
        util::copy_executable(&binary, &fresh);
        std::fs::rename(&fresh, &binary).unwrap();
        let served = answered();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        wait_for_starts(&starts, round);
        util::wait_until(
            || answered() > served + 10,
            || format!("no fetch after the upgrade: {}", tally.lock().unwrap()),
        );
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        assert!(
            !exe.to_string_lossy().ends_with("(deleted)"),
            "still the old binary: {exe:?}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    hammer.join().unwrap();
    let tally = tally.lock().unwrap();
    println!("upgrade test: {tally}");
    tally.assert_none_failed();
    assert!(tally.answered > 30);
    assert_eq!(
        client.entries().unwrap(),
        before,
        "names or lifetimes changed"
    );
    util::terminate(&mut child);
}

/// A stand-in for systemd's side of `$NOTIFY_SOCKET`: it keeps the fds
/// sent with `FDSTORE=1` under their `FDNAME=`, drops them on
/// `FDSTOREREMOVE=1`, counts `READY=1`, and checks every datagram's text.
struct FdStore {
    path: PathBuf,
    state: Arc<Mutex<StoreState>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct StoreState {
    fds: Vec<(String, OwnedFd)>,
    ready: usize,
    bad: Vec<String>,
}

impl FdStore {
    fn start(dir: &TempDir) -> FdStore {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let state = Arc::new(Mutex::new(StoreState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut text = vec![0; 4096];
            while !stopped.load(Ordering::SeqCst) {
                let mut fds: Vec<Option<OwnedFd>> = (0..253).map(|_| None).collect();
                let Ok(got) = io_fdpass::recv_fds(&socket, &mut text, &mut fds) else {
                    continue;
                };
                let message = String::from_utf8_lossy(&text[..got.bytes]).into_owned();
                let fds: Vec<OwnedFd> = fds.into_iter().flatten().collect();
                kept.lock().unwrap().take(&message, fds);
            }
        });
        FdStore { path, state, stop }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .fds
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Copies of what it keeps, in order, as systemd would pass them.
    fn fds(&self) -> Vec<(String, OwnedFd)> {
        let state = self.state.lock().unwrap();
        state
            .fds
            .iter()
            .map(|(n, fd)| (n.clone(), fd.try_clone().unwrap()))
            .collect()
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl StoreState {
    fn take(&mut self, message: &str, fds: Vec<OwnedFd>) {
        let mut vars = BTreeMap::new();
        for line in message.lines() {
            match line.split_once('=') {
                Some((key, value)) => {
                    vars.insert(key.to_owned(), value.to_owned());
                }
                None => self.bad.push(message.to_owned()),
            }
        }
        let name = vars.get("FDNAME").cloned();
        if vars.contains_key("READY") {
            self.ready += 1;
        } else if vars.get("FDSTORE").map(String::as_str) == Some("1") {
            let Some(name) = name.filter(|_| !fds.is_empty()) else {
                return self.bad.push(message.to_owned());
            };
            for fd in fds {
                // systemd keeps one copy of a file however often it is sent.
                let same = |kept: &OwnedFd| {
                    let (a, b) = (
                        rustix::fs::fstat(kept).unwrap(),
                        rustix::fs::fstat(&fd).unwrap(),
                    );
                    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
                };
                if !self.fds.iter().any(|(_, kept)| same(kept)) {
                    self.fds.push((name.clone(), fd));
                }
            }
        } else if vars.get("FDSTOREREMOVE").map(String::as_str) == Some("1") {
            let Some(name) = name else {
                return self.bad.push(message.to_owned());
            };
            self.fds.retain(|(kept, _)| *kept != name);
        } else {
            self.bad.push(message.to_owned());
        }
    }
}

/// Starts `program ARGS` as systemd starts a service with an fd store:
/// its fds at 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and its own pid
/// in `LISTEN_PID`.
fn start_with_fds(
    program: &Path,
    args: &[&str],
    fds: Vec<(String, OwnedFd)>,
    env: &[(&str, &str)],
) -> Command {
    use std::os::unix::process::CommandExt;
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#])
        .arg(program)
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .envs(env.iter().copied());
    let raw: Vec<i32> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let keep = fds;
    // SAFETY: between fork and exec the closure only calls fcntl and dup2,
    // which are async-signal-safe, on fds that `keep` holds open.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep;
            let high = 3 + raw.len() as i32;
            let mut moved = Vec::new();
            for &fd in &raw {
                let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high);
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved.push(copy);
            }
            for (i, &fd) in moved.iter().enumerate() {
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn kill_9_under_an_fd_store_loses_nothing_and_refuses_no_one() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("fdstore");
    let store = FdStore::start(&dir);
    let socket = dir.join("h.sock");
    let notify = [("NOTIFY_SOCKET", s(&store.path))];
    let binary = Path::new(env!("CARGO_BIN_EXE_fdpass"));
    let (mut first, starts) = logged_holder(binary, &socket, &[], &notify);
    wait_for_starts(&starts, 1);
    util::wait_until(
        || store.state.lock().unwrap().ready == 1,
        || "no READY=1".into(),
    );
    assert_eq!(store.names(), ["fdpass-hold", "fdpass-hold-state"]);

    let data = file(&dir, "data", "kept by the fd store");
    success(&mut with_files(
        &["store", s(&socket), "cfg", "3", "--ttl", "1h"],
        &[&data],
    ));
    success(&mut with_files(
        &["store", s(&socket), "gone", "3"],
        &[&data],
    ));
    success(fdpass().args(["drop", s(&socket), "gone"]));
    util::wait_until(
        || store.names() == ["cfg", "fdpass-hold", "fdpass-hold-state"],
        || format!("the fd store has {:?}", store.names()),
    );
    let before = listed(s(&socket));

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&first),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    first.wait().unwrap();
    // No holder runs, yet a client connects: the fd store keeps the socket
    // listening, and the client waits in its backlog.
    let waiting = fdpass()
        .args(["list", "--json", "--timeout", "60s", s(&socket)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut next = start_with_fds(binary, &["-v", "hold", s(&socket)], store.fds(), &notify)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let answer = waiting.wait_with_output().unwrap();
    assert!(answer.status.success(), "{}", stderr(&answer));
    assert_eq!(
        util::stdout(&answer)
            .lines()
            .filter(|l| l.contains('{'))
            .map(|l| l.trim().trim_end_matches(',').to_owned())
            .collect::<Vec<_>>(),
        before,
        "names, owners or lifetimes were lost"
    );
    let shown = success(fdpass().args(["fetch", s(&socket), "cfg", "--", "sh", "-c", "cat <&3"]));
    assert_eq!(shown, "kept by the fd store");
    util::wait_until(
        || store.state.lock().unwrap().ready == 2,
        || "no READY=1 from the next".into(),
    );
    assert_eq!(store.names(), ["cfg", "fdpass-hold", "fdpass-hold-state"]);
    assert!(
        store.state.lock().unwrap().bad.is_empty(),
        "{:?}",
        store.state.lock().unwrap().bad
    );
    util::terminate(&mut next);
}

#[test]
fn recv_gives_up_in_time() {
    let _fds = OpensFds::start();
    let dir = TempDir::new("recv-timeout");
    let sock = dir.join("in.sock");
    fails(
        fdpass().args(["recv", s(&sock), "--timeout", "300ms", "--", "true"]),
        75,
        "gave up",
    );
    assert!(!sock.exists(), "recv left its socket behind");
}

#[test]
fn the_example_unit_keeps_every_fd_in_the_fd_store() {
    let _fds = OpensFds::start();
    let unit = include_str!("../examples/fdpass-hold.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the unit has no {key}="))
    };
    assert_eq!(setting("Type"), "notify");
    assert_eq!(setting("Restart"), "always");
    assert!(setting("ExecReload").contains("kill -HUP $MAINPID"));
    let exec = setting("ExecStart");
    let args: Vec<&str> = exec.split(' ').skip(1).collect();
    let max_names: usize = args
        .windows(2)
        .find(|pair| pair[0] == "--max-names")
        .map_or(1024, |pair| pair[1].parse().unwrap());
    assert!(
        setting("FileDescriptorStoreMax").parse::<usize>().unwrap() >= max_names + 2,
        "the fd store cannot keep every name, the socket and the state"
    );
    // Its command line is one fdpass takes.
    let help: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
    success(fdpass().args(&help));
}

/// The tests that run processes as other users, which only root can: each
/// is ignored unless run with `--ignored`, which `.ci/test` does as root
/// (filtered by this module's name), so that elsewhere they show as
/// ignored, never as passed.
mod needs_root {
    use super::*;

    /// Runs `cmd` as user nobody.
    fn as_nobody(cmd: &mut Command) -> &mut Command {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534)
    }

    #[test]
    #[ignore = "needs root: runs a holder as another user; .ci/test runs it as root"]
    fn a_squatter_of_another_uid_gets_nothing() {
        // Held from the start: the fds that starting processes opens here
        // for a moment would upset a count taken by another test meanwhile.
        let guard = NoLeak::start();
        util::assert_root();
        let dir = TempDir::new("squat");
        let binary = util::fdpass_for_anyone(&dir);
        let name = format!("@fdpass-test-squat-{}", std::process::id());
        let mut squatter = as_nobody(Command::new(&binary).args(["hold", &name]))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let _stop = util::KillOnPanic(squatter.id());
        let client = Client::new(&name);
        util::wait_until(
            || io_fdpass::connect_unix(&name).is_ok(),
            || "the squatter never listened".into(),
        );
        let secret = file(&dir, "secret", "for root only");
        fails(
            &mut with_files(&["store", &name, "secret", "3"], &[&secret]),
            77,
            "runs as uid 65534",
        );
        fails(
            fdpass().args(["fetch", &name, "x", "--", "true"]),
            77,
            "uid 65534",
        );
        fails(fdpass().args(["send", &name, "0"]), 77, "uid 65534");
        let denied = client.store("secret", std::io::stdin()).unwrap_err();
        assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(denied.to_string().contains("nothing was sent"), "{denied}");
        guard.assert_unchanged();
        // The squatter, asked by its own user, holds nothing.
        let listed = success(as_nobody(Command::new(&binary).args(["list", &name])));
        assert_eq!(listed, "");
        // Unless its uid is trusted by name.
        success(Command::new(&binary).args(["list", "--holder-uid", "65534", &name]));
        util::terminate(&mut squatter);
    }

    #[test]
    #[ignore = "needs root: runs clients as other users; .ci/test runs it as root"]
    fn strangers_are_turned_away_and_allowed_users_need_no_chmod() {
        let _fds = OpensFds::start();
        util::assert_root();
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("access");
        let binary = util::fdpass_for_anyone(&dir);
        let mode = |holder: &Holder| {
            std::fs::metadata(&holder.socket)
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };

        // The default: 0600, and another user cannot even connect.
        let holder = Holder::start(&dir, &[]);
        assert_eq!(mode(&holder), 0o600);
        fails(
            as_nobody(Command::new(&binary).args(["list", holder.sock()])),
            77,
            "ermission denied",
        );
        drop(holder);

        // --allow-uid opens the file and serves that uid, and only it.
        let holder = Holder::start(&dir, &["--allow-uid", "65534"]);
        assert_eq!(mode(&holder) & 0o006, 0o006);
        success(as_nobody(Command::new(&binary).args([
            "list",
            "--holder-uid",
            "0",
            holder.sock(),
        ])));
        let mut other = Command::new(&binary);
        {
            use std::os::unix::process::CommandExt;
            other.args(["list", holder.sock()]).uid(65533).gid(65533);
        }
        fails(
            &mut other,
            77,
            "uid 65533 (gid 65533) may not use this holder",
        );
        drop(holder);

        // --allow-gid: the group owns the file and may use it.
        let holder = Holder::start(&dir, &["--allow-gid", "65534"]);
        let meta = std::fs::metadata(&holder.socket).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
        assert_eq!(mode(&holder), 0o660);
        let mut member = Command::new(&binary);
        {
            use std::os::unix::process::CommandExt;
            member.args(["list", holder.sock()]).uid(65533).gid(65534);
        }
        success(&mut member);
        drop(holder);

        // --mode and --group as given.
        let holder = Holder::start(&dir, &["--mode", "0640", "--group", "65534"]);
        assert_eq!(mode(&holder), 0o640);
        drop(holder);
        fails(
            fdpass().args(["hold", "@x", "--mode", "0600"]),
            64,
            "abstract",
        );
        fails(
            fdpass().args([
                "hold",
                s(&dir.join("g.sock")),
                "--group",
                "no-such-group-here",
            ]),
            64,
            "no group named",
        );
    }

    #[test]
    #[ignore = "needs root: runs a sender as another user; .ci/test runs it as root"]
    fn recv_takes_fds_only_from_trusted_senders() {
        let _fds = OpensFds::start();
        util::assert_root();
        let dir = TempDir::new("recv-trust");
        let sock = dir.join("in.sock");
        let binary = util::fdpass_for_anyone(&dir);
        let recv = fdpass()
            .args([
                "recv",
                s(&sock),
                "--timeout",
                "60s",
                "--",
                "sh",
                "-c",
                "cat <&3",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        util::wait_for_file(&sock);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let theirs = file(&dir, "theirs", "from nobody");
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).unwrap();
        // nobody's send is turned away ...
        let mut stranger = Command::new("sh");
        stranger
            .args(["-c", r#"exec "$0" send --timeout 60s "$1" 3 3<"$2""#])
            .arg(&binary)
            .arg(&sock)
            .arg(&theirs);
        as_nobody(&mut stranger);
        // ... and told why, not "Broken pipe".
        let out = output(&mut stranger);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(77), "{err}");
        assert!(
            err.contains(&format!(
                "the receiver at {} refused the fds: it takes fds only from root, \
                 and this sender runs as uid 65534 (its --allow-uid 65534 would take them)",
                s(&sock)
            )),
            "{err}"
        );
        // ... and root's is taken.
        let ours = file(&dir, "ours", "from root");
        success(&mut with_files(&["send", s(&sock), "3"], &[&ours]));
        let out = recv.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(util::stdout(&out), "from root");
    }
}
