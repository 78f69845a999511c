//! What `fdpass hold` starts from: `--from` once, on a first start, and
//! never again on an upgrade; never a holder's own names from another
//! holder; and of `LISTEN_FDS`, only the fds that were passed, never its
//! own event loop's. After each hostile case the holder's fd count and its
//! `list` are checked.
#![cfg(unix)]

mod util;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use util::{fails, fdpass, s, success, wait_until, with_files, Holder, TempDir};

fn file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What a holder started by [`logged`] has said on stderr, line by line.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// How many images have started: each says "holding" once.
    fn starts(&self) -> usize {
        let lines = self.0.lock().unwrap();
        lines.iter().filter(|l| l.contains("hold: holding")).count()
    }

    fn wait_for_starts(&self, n: usize) {
        wait_until(
            || self.starts() >= n,
            || format!("{} start(s), not {n}: {:?}", self.starts(), self.0.lock()),
        );
    }

    fn says(&self, what: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(what))
    }
}

/// Runs `cmd` (an `fdpass -v hold` at `socket`) as a [`Holder`], with its
/// log read into a [`Log`]. It inherits no fd of the test's but stdin,
/// stdout and stderr (the test harness may leave some open across exec),
/// so that its count is all its own and the same in every image.
fn logged(mut cmd: Command, socket: PathBuf) -> (Holder, Log) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls fcntl, which is
    // async-signal-safe; on a number that is not open it fails, harmlessly.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::default();
    let lines = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            lines.0.lock().unwrap().push(line);
        }
    });
    (Holder { child, socket }, log)
}

/// `fdpass -v hold SOCKET ARGS`.
fn hold(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = fdpass();
    cmd.args(["-v", "hold", s(socket)]).args(args);
    cmd
}

/// Sends SIGHUP to the holder and waits for its `n`-th image to serve.
fn upgrade(holder: &Holder, log: &Log, n: usize) {
    let pid = rustix::process::Pid::from_child(&holder.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    log.wait_for_starts(n);
    holder.wait_until_serving();
}

/// What `fdpass fetch` shows of the file held under `name`, opened anew,
/// so that the held fd's offset stays where it was.
fn shown(holder: &Holder, name: &str) -> String {
    let show = ["sh", "-c", "cat /dev/fd/3"];
    success(
        fdpass()
            .args(["fetch", holder.sock(), name, "--"])
            .args(show),
    )
}

#[test]
fn an_upgrade_keeps_what_was_stored_and_dropped_since_from() {
    let dir = TempDir::new("from-hup");
    let other = Holder::start(&dir, &[]);
    let theirs = file(&dir, "theirs", "the other holder's");
    for name in ["x", "y"] {
        success(&mut with_files(
            &["store", other.sock(), name, "3"],
            &[&theirs],
        ));
    }
    let socket = dir.join("new.sock");
    let (new, log) = logged(hold(&socket, &["--from", other.sock()]), socket);
    log.wait_for_starts(1);
    assert_eq!(new.list(), ["x", "y"]);

    let mine = file(&dir, "mine", "stored since");
    success(&mut with_files(&["store", new.sock(), "y", "3"], &[&mine]));
    success(&mut with_files(&["store", new.sock(), "z", "3"], &[&mine]));
    success(fdpass().args(["drop", new.sock(), "x"]));
    let before = new.fd_count();

    upgrade(&new, &log, 2);
    assert_eq!(new.list(), ["y", "z"], "the other holder's names came back");
    assert_eq!(shown(&new, "y"), "stored since");
    assert!(log.says("not taking over from"), "{:?}", log.0.lock());
    new.wait_for_fd_count(before);
}

#[test]
fn an_upgrade_goes_on_after_the_from_holder_has_stopped() {
    let dir = TempDir::new("from-gone");
    let other = Holder::start(&dir, &[]);
    let theirs = file(&dir, "theirs", "carried over");
    success(&mut with_files(
        &["store", other.sock(), "x", "3", "--ttl", "1h"],
        &[&theirs],
    ));
    let socket = dir.join("new.sock");
    let (mut new, log) = logged(hold(&socket, &["--from", other.sock()]), socket);
    log.wait_for_starts(1);
    let listed = success(fdpass().args(["list", "--json", new.sock()]));
    drop(other);
    let before = new.fd_count();

    upgrade(&new, &log, 2);
    assert!(new.child.try_wait().unwrap().is_none(), "the holder exited");
    assert_eq!(
        success(fdpass().args(["list", "--json", new.sock()])),
        listed
    );
    assert_eq!(shown(&new, "x"), "carried over");
    new.wait_for_fd_count(before);
}

/// A holder that is not a real one: it lists `listed`, answers each fetch
/// with `reserved` for a holder's own names and `data` for the others,
/// and records every request.
struct FakeOther {
    path: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeOther {
    fn start(path: PathBuf, listed: &'static str, reserved: OwnedFd, data: OwnedFd) -> FakeOther {
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let request = greet_and_read(&stream);
                recorded.lock().unwrap().push(request.clone());
                let mut words = request.split(' ');
                match words.next() {
                    Some("list") => {
                        let _ = (&stream).write_all(format!("ok\n{listed}").as_bytes());
                    }
                    Some("fetch") => {
                        let fds: Vec<_> = words
                            .map(|name| match name {
                                "fdpass-hold" | "fdpass-hold-state" => reserved.as_fd(),
                                _ => data.as_fd(),
                            })
                            .collect();
                        let _ = io_fdpass::send_fds(&stream, b"ok\n", &fds);
                    }
                    _ => {}
                }
            }
        });
        FakeOther {
            path,
            requests,
            stop,
        }
    }
}

impl Drop for FakeOther {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Greets a client and reads its request line, without the newline.
fn greet_and_read(stream: &UnixStream) -> String {
    let _ = (&*stream).write_all(b"fdpass-hold 1\n");
    let mut line = Vec::new();
    let mut byte = [0];
    while (&*stream).read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// The inode of the socket `fd`, as `/proc/PID/fd` shows it.
fn socket_link(fd: &UnixListener) -> String {
    format!("socket:[{}]", rustix::fs::fstat(fd).unwrap().st_ino)
}

#[test]
fn from_never_takes_a_holders_own_names() {
    let dir = TempDir::new("from-reserved");
    // Its own listening socket, offered as the new holder's socket and
    // state file.
    let trap = UnixListener::bind(dir.join("trap.sock")).unwrap();
    trap.set_nonblocking(true).unwrap();
    let data = std::fs::File::open(file(&dir, "data", "fair")).unwrap();
    let listed =
        "fdpass-hold kind=unix-stream\nfdpass-hold-state kind=file\na kind=file\na kind=file\n";
    let other = FakeOther::start(
        dir.join("other.sock"),
        listed,
        OwnedFd::from(trap.try_clone().unwrap()),
        OwnedFd::from(data),
    );
    let socket = dir.join("new.sock");
    let (new, log) = logged(hold(&socket, &["--from", s(&other.path)]), socket);
    log.wait_for_starts(1);
    assert_eq!(new.list(), ["a"]);
    assert_eq!(shown(&new, "a"), "fair");
    let fetches: Vec<String> = other
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("fetch"))
        .cloned()
        .collect();
    assert_eq!(fetches, ["fetch a"], "asked for a holder's own names");
    assert!(
        log.says(r#"lists "fdpass-hold", not taken over"#),
        "{:?}",
        log.0.lock()
    );
    assert!(log.says(r#"lists "fdpass-hold-state", not taken over"#));
    assert!(!new.open_fds().contains(&socket_link(&trap)));
    let before = new.fd_count();

    upgrade(&new, &log, 2);
    assert_eq!(new.list(), ["a"]);
    assert_eq!(shown(&new, "a"), "fair");
    assert!(!new.open_fds().contains(&socket_link(&trap)));
    assert!(trap.accept().is_err(), "a client reached the trap");
    assert_eq!(other.requests.lock().unwrap().len(), 2, "asked again");
    new.wait_for_fd_count(before);
}

#[test]
fn listen_fds_counting_more_than_were_passed_holds_only_what_was() {
    let dir = TempDir::new("listen-more");
    let data = file(&dir, "data", "passed");
    let socket = dir.join("h.sock");
    let mut cmd = Command::new("sh");
    // Two fds passed, eight counted: 5 to 10 are not open when it starts.
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@" 3<"$DATA" 4<"$DATA""#])
        .arg(env!("CARGO_BIN_EXE_fdpass"))
        .args(["-v", "hold", s(&socket)])
        .env("DATA", &data)
        .env("LISTEN_FDS", "8")
        .env("LISTEN_FDNAMES", "a:b:c:d:e:f:g:h");
    let (holder, log) = logged(cmd, socket);
    log.wait_for_starts(1);
    holder.wait_until_serving();
    assert_eq!(holder.list(), ["a", "b"], "{:?}", holder.open_fds());
    assert!(
        log.says(r#"an fd named "c" that is not open"#),
        "{:?}",
        log.0.lock()
    );
    let before = holder.fd_count();
    for name in ["c", "d", "e", "f", "g", "h"] {
        fails(
            fdpass().args(["drop", holder.sock(), name]),
            66,
            "no fd named",
        );
        assert_eq!(holder.list(), ["a", "b"]);
        holder.wait_for_fd_count(before);
    }
    assert_eq!(shown(&holder, "a"), "passed");
    success(fdpass().args(["drop", holder.sock(), "a"]));
    assert_eq!(holder.list(), ["b"]);
    holder.wait_for_fd_count(before - 1);
    success(fdpass().args(["drop", holder.sock(), "b"]));
    assert!(holder.list().is_empty());
    holder.wait_for_fd_count(before - 2);
    assert!(!log.says("panicked"), "{:?}", log.0.lock());
}
