//! `fdpass adopt` and `fdpass fds` against servers that know nothing of fd
//! passing: their sockets are taken by number and by address, a server is
//! replaced under a client that never pauses without one failed request,
//! and every error (no such process, fd or address, a process that exits
//! midway, another user) has its exit code and message, with nothing left
//! open.
#![cfg(unix)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use io_fdpass::process::Process;
use util::http::{self, FailureKind, Tally};
use util::{fails, fdpass, s, stderr, stdout, success, wait_until, Holder, TempDir};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server.py");

/// An HTTP server as anyone would write it, with no thought of fd passing:
/// Python's own handler serves a page that says which process it is. It
/// binds its own port, says so, and on SIGTERM finishes the request in
/// hand and exits.
const OLD_SERVER: &str = r#"import functools, http.server, os, signal, sys, threading

with open(os.path.join(sys.argv[2], "index.html"), "w") as page:
    page.write(f"hello from pid {os.getpid()}\n")
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("listening", server.fileno(), flush=True)
server.serve_forever()
"#;

/// A process that listens on a TCP port and at a unix socket and waits for
/// its stdin to close; it prints the two fd numbers and the port.
const LISTENER: &str = r#"import socket, sys
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen()
unix = socket.socket(socket.AF_UNIX); unix.bind(sys.argv[1]); unix.listen()
r = open(sys.argv[2]) if len(sys.argv) > 2 else None
print(tcp.fileno(), unix.fileno(), tcp.getsockname()[1], flush=True)
sys.stdin.read()
"#;

/// A running Python process, its first line of output, and its stdin.
struct Python {
    child: Child,
    stdin: Option<ChildStdin>,
    said: Vec<String>,
    /// Where an old server's page is.
    pages: Option<TempDir>,
}

impl Python {
    fn start(script: &str, args: &[&str]) -> Python {
        Python::start_with(script, args, Stdio::inherit())
    }

    fn start_with(script: &str, args: &[&str], stderr: Stdio) -> Python {
        let mut child = util::peers::python()
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Python {
            stdin: child.stdin.take(),
            child,
            said: line.split_whitespace().map(str::to_owned).collect(),
            pages: None,
        }
    }

    /// An [`OLD_SERVER`] on `port`; its log of requests goes nowhere.
    fn old_server(port: u16) -> Python {
        let pages = TempDir::new("pages");
        let mut old = Python::start_with(
            OLD_SERVER,
            &[&port.to_string(), s(&pages.join(""))],
            Stdio::null(),
        );
        assert_eq!(old.said[0], "listening", "{:?}", old.said);
        old.pages = Some(pages);
        old
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Whether it is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.alive() {
            let _ = util::terminate(&mut self.child);
        }
    }
}

/// A shell command that lists its fds first (straight to stdout, so that
/// no pipe of the shell's is listed), then the socket-activation
/// variables.
const SHOW: &str =
    r#"ls -m /proc/$$/fd; echo "$LISTEN_FDS $LISTEN_FDNAMES $([ "$LISTEN_PID" = $$ ] && echo ok)""#;

#[test]
fn adopt_by_fd_number_and_by_address() {
    let dir = TempDir::new("adopt");
    let unix = dir.join("app.sock");
    let old = Python::start(LISTENER, &[s(&unix)]);
    let (tcp_fd, unix_fd, port) = (&old.said[0], &old.said[1], &old.said[2]);

    // By number, named.
    let shown = success(fdpass().args([
        "adopt",
        &old.pid(),
        tcp_fd,
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        SHOW,
    ]));
    assert_eq!(shown, "0, 1, 2, 3\n1 web ok\n");

    // By address, both kinds, with their default names; the command gets
    // the listening sockets themselves.
    let check = r"import socket
for fd in (3, 4):
    s = socket.socket(fileno=fd)
    print(s.family.name, s.getsockname(), s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    s.detach()";
    let tcp = format!("tcp:127.0.0.1:{port}");
    let at = format!("unix:{}", s(&unix));
    let script = format!("{SHOW}; exec python3 -c '{check}'");
    let shown = success(fdpass().args(["adopt", &old.pid(), &tcp, &at, "--", "sh", "-c", &script]));
    assert_eq!(
        shown,
        format!(
            "0, 1, 2, 3, 4\n2 tcp:unix ok\nAF_INET ('127.0.0.1', {port}) 1\nAF_UNIX {} 1\n",
            s(&unix)
        )
    );
    // The same file by another path is the same address.
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&unix, &link).unwrap();
    let by_link = format!("unix:{}", s(&link));
    let shown = success(fdpass().args(["adopt", &old.pid(), &by_link, "--", "sh", "-c", SHOW]));
    assert_eq!(shown, "0, 1, 2, 3\n1 unix ok\n");
    assert_ne!(unix_fd, tcp_fd);
}

#[test]
fn errors_have_their_exit_codes_and_run_nothing() {
    let dir = TempDir::new("adopt-errors");
    let unix = dir.join("app.sock");
    let mut old = Python::start(LISTENER, &[s(&unix)]);
    let port = old.said[2].clone();
    let pid = old.pid();
    let marker = dir.join("ran");
    let touch = ["--", "touch", s(&marker)];

    let not_listening = format!("tcp:127.0.0.1:{}", util::free_port());
    fails(
        fdpass().args(["adopt", &pid, &not_listening]).args(touch),
        66,
        &format!("has no socket listening at {not_listening}; it listens at tcp:127.0.0.1:{port}"),
    );
    fails(
        fdpass()
            .args(["adopt", &pid, "unix:/nowhere.sock"])
            .args(touch),
        66,
        "has no socket listening at unix:/nowhere.sock",
    );
    fails(
        fdpass().args(["adopt", &pid, "999"]).args(touch),
        66,
        &format!("process {pid} has no fd 999 open"),
    );
    // An fd that is there, then one that is not: the first is closed.
    fails(
        fdpass()
            .args(["adopt", &pid, &old.said[0], "999"])
            .args(touch),
        66,
        "has no fd 999",
    );
    fails(
        fdpass().args(["adopt", "99999999", "3"]).args(touch),
        66,
        "there is no process 99999999",
    );
    fails(
        fdpass().args(["fds", "99999999"]),
        66,
        "no process 99999999",
    );
    fails(
        fdpass().args(["adopt", &pid, "3", "nonsense"]).args(touch),
        64,
        "WHAT is an fd number, tcp:HOST:PORT or unix:SOCKET",
    );
    fails(
        fdpass()
            .args(["adopt", &pid, "3", "--ready-after", "1s"])
            .args(touch),
        64,
        "--stop-old",
    );
    fails(
        fdpass().args(["adopt", &pid, "3", "4", "--store", "/x.sock"]),
        64,
        "two fds would be stored as unknown",
    );
    fails(
        fdpass().args(["adopt", &pid, "3", "--", "no-such-command-here"]),
        127,
        "command not found",
    );
    assert!(!marker.exists(), "a command ran after an error");
    assert!(old.alive());
    an_exited_process_fails(touch);
    assert!(!marker.exists(), "a command ran after an error");
}

/// A process that has exited, and whose parent has not collected it yet:
/// its pid is there, its fds are gone. `touch` is the command fdpass must
/// not run.
fn an_exited_process_fails(touch: [&str; 3]) {
    let mut gone = Command::new("true").spawn().unwrap();
    let process = Process::open(gone.id()).unwrap();
    wait_until(
        || process.has_exited().unwrap(),
        || "the child never exited".into(),
    );
    let gone_pid = gone.id().to_string();
    fails(
        fdpass().args(["adopt", &gone_pid, "0"]).args(touch),
        66,
        &format!("process {gone_pid} has exited"),
    );
    fails(
        fdpass()
            .args(["adopt", &gone_pid, "tcp:127.0.0.1:1"])
            .args(touch),
        66,
        "has exited",
    );
    gone.wait().unwrap();
}

#[test]
fn fds_shows_what_a_process_holds() {
    let dir = TempDir::new("fds");
    let unix = dir.join("app.sock");
    let file = dir.join("data");
    std::fs::write(&file, "x").unwrap();
    let old = Python::start(LISTENER, &[s(&unix), s(&file)]);
    let (tcp_fd, unix_fd, port) = (&old.said[0], &old.said[1], &old.said[2]);

    let lines = success(fdpass().args(["fds", &old.pid()]));
    for line in [
        format!("{tcp_fd} a listening TCP socket on 127.0.0.1:{port}"),
        format!("{unix_fd} a listening unix stream socket on {}", s(&unix)),
        format!("the regular file {}", s(&file)),
        "a pipe".into(),
    ] {
        assert!(
            lines.lines().any(|l| l.ends_with(&line)),
            "{line:?} not in\n{lines}"
        );
    }

    // JSON, read by a parser that is not ours.
    let json = success(fdpass().args(["fds", "--json", &old.pid()]));
    let read = r#"import json, sys
fds = {fd["fd"]: fd for fd in json.load(sys.stdin)}
tcp, unix = fds[int(sys.argv[1])], fds[int(sys.argv[2])]
print(tcp["kind"], tcp["family"], tcp["type"], tcp["listening"], tcp["local"])
print(unix["kind"], unix["family"], unix["type"], unix["listening"], unix["local"])
print(*sorted({fd["kind"] for fd in fds.values()}))
print(*[fd["path"] for fd in fds.values() if fd["kind"] == "file"])"#;
    let mut parse = util::peers::python()
        .args(["-c", read, tcp_fd, unix_fd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    parse
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = parse.wait_with_output().unwrap();
    assert!(out.status.success(), "{json}");
    let out = stdout(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("socket ipv4 stream True 127.0.0.1:{port}")
    );
    assert_eq!(lines[1], format!("socket unix stream True {}", s(&unix)));
    // Its stdin and stdout are pipes; what its stderr is depends on how
    // the tests run.
    for kind in ["file", "pipe", "socket"] {
        assert!(lines[2].split(' ').any(|k| k == kind), "{out}");
    }
    // Its stderr may be a file too, when the tests' output goes to one.
    assert!(lines[3].split(' ').any(|path| path == s(&file)), "{out}");
}

/// `fdpass adopt PID ADDR --stop-old -v -- COMMAND`, its log piped.
fn adopt_stop_old(pid: &str, addr: &str, command: &[&str]) -> Command {
    let mut cmd = fdpass();
    cmd.args(["adopt", pid, addr, "--stop-old", "-v", "--"])
        .args(command)
        .stderr(Stdio::piped());
    cmd
}

/// What the client has seen: answers by the pid that gave them, in order
/// of their first answer, and every request counted, failures by kind.
#[derive(Debug, Default)]
struct Seen {
    answers: Vec<(String, usize)>,
    tally: Tally,
}

impl Seen {
    fn from(&self, pid: &str) -> usize {
        self.answers
            .iter()
            .find(|(p, _)| p == pid)
            .map_or(0, |(_, n)| *n)
    }
}

/// A client that makes requests without pause, one connection and one
/// attempt each, and counts every failure (refused, reset, timed out,
/// empty or bad).
fn client(port: u16, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let result = http::get(util::local(port));
            let mut seen = seen.lock().unwrap();
            seen.tally.count(&result);
            if let Ok(answer) = result {
                let pid = answer.rsplit(' ').next().unwrap_or("").trim().to_owned();
                match seen.answers.iter_mut().find(|(p, _)| *p == pid) {
                    Some((_, n)) => *n += 1,
                    None => seen.answers.push((pid, 1)),
                }
            }
        }
    })
}

/// Waits until `ready` holds of what the client has seen.
fn wait_for(seen: &Mutex<Seen>, what: &str, ready: impl Fn(&Seen) -> bool) {
    wait_until(
        || ready(&seen.lock().unwrap()),
        || format!("the client never saw {what}: {:?}", seen.lock().unwrap()),
    );
}

/// The notify directories fdpass process `pid` made.
fn notify_dirs(pid: u32) -> Vec<String> {
    let prefix = format!("io-fdpass-notify-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

#[test]
fn replace_a_server_under_a_client_that_never_pauses() {
    let port = util::free_port();
    let mut old = Python::old_server(port);
    let old_pid = old.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = client(port, stop.clone(), seen.clone());
    wait_for(&seen, "100 answers from the old server", |s| {
        s.from(&old_pid) >= 100
    });

    let addr = format!("tcp:127.0.0.1:{port}");
    let mut new = adopt_stop_old(&old_pid, &addr, &["python3", SERVER])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let new_pid = new.id().to_string();
    // The old server is told to stop once the new one is ready, and
    // finishes what it has in hand.
    assert!(old.child.wait().unwrap().success());
    let at_exit = seen.lock().unwrap().from(&new_pid);
    wait_for(
        &seen,
        "100 answers from the new server after the old one exited",
        |s| s.from(&new_pid) >= at_exit + 100,
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();
    println!("adopt test: {}", seen.tally);
    seen.tally.assert_none_failed();
    let order: Vec<&str> = seen.answers.iter().map(|(pid, _)| pid.as_str()).collect();
    assert_eq!(order, [old_pid.as_str(), new_pid.as_str()]);

    // The new server is fdpass itself, become the command: of the old
    // server's sockets it holds the listener at fd 3 and nothing else.
    let fds = Process::open(new.id()).unwrap().fds().unwrap();
    let listeners: Vec<i32> = fds
        .iter()
        .filter(|fd| {
            fd.kind
                .socket()
                .is_some_and(io_fdpass::SocketInfo::is_tcp_listener)
        })
        .map(|fd| fd.fd)
        .collect();
    assert_eq!(listeners, [3], "{fds:?}");
    // The socket it was told of is there while it runs.
    assert_eq!(notify_dirs(new.id()).len(), 1);
    assert!(util::terminate(&mut new).success());
    // The process that waited for READY=1 has seen the command exit, and
    // has removed its socket.
    wait_until(
        || notify_dirs(new.id()).is_empty(),
        || format!("left behind: {:?}", notify_dirs(new.id())),
    );
    let mut log = String::new();
    new.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(
        log.contains(&format!("sent SIGTERM to process {old_pid}")),
        "{log}"
    );
    // No copy of the socket is left anywhere.
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn if_the_command_exits_first_the_old_process_is_left_alone() {
    let port = util::free_port();
    let mut old = Python::old_server(port);
    let addr = format!("tcp:127.0.0.1:{port}");
    let out = util::output(fdpass().args([
        "adopt",
        &old.pid(),
        &addr,
        "--stop-old",
        "-v",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]));
    // The command's status is fdpass's; reading stderr to its end waited
    // for the watcher too, which holds it until it is done.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("left alone"), "{}", stderr(&out));
    assert!(old.alive());
    assert!(http::get(util::local(port)).unwrap().contains(&old.pid()));

    // Told ready by the clock: the old server stops while the command runs.
    let mut waiting = fdpass()
        .args([
            "adopt",
            &old.pid(),
            &addr,
            "--stop-old",
            "--ready-after",
            "10ms",
            "--",
            "sh",
            "-c",
            "cat >/dev/null",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(old.child.wait().unwrap().success());
    drop(waiting.stdin.take());
    assert!(waiting.wait().unwrap().success());
}

#[test]
fn an_old_process_that_exits_before_the_command_is_ready() {
    let port = util::free_port();
    let mut old = Python::old_server(port);
    let addr = format!("tcp:127.0.0.1:{port}");
    // Says READY=1 once told to on its stdin.
    let ready_later = r#"import os, socket, sys
sys.stdin.readline()
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
sys.stdin.read()"#;
    let mut new = adopt_stop_old(&old.pid(), &addr, &["python3", "-c", ready_later])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the command runs, which is once the fds are taken.
    let comm = format!("/proc/{}/comm", new.id());
    wait_until(
        || std::fs::read_to_string(&comm).is_ok_and(|c| c.starts_with("python")),
        || "the command never started".into(),
    );
    // Not ready yet, so the old server still serves: it alone accepts.
    let answer = http::get(util::local(port)).unwrap();
    assert!(answer.contains(&old.pid()), "{answer}");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&old.child),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    old.child.wait().unwrap();
    let mut stdin = new.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = new.wait().unwrap();
    let mut log = String::new();
    new.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("had exited already"), "{log}");
}

#[test]
fn store_the_socket_in_a_holder_and_stop_the_old_server() {
    let dir = TempDir::new("adopt-store");
    let holder = Holder::start(&dir, &[]);
    let port = util::free_port();
    let mut old = Python::old_server(port);
    let addr = format!("tcp:127.0.0.1:{port}");
    success(fdpass().args([
        "adopt",
        &old.pid(),
        &addr,
        "--name",
        "web",
        "--store",
        holder.sock(),
        "--stop-old",
    ]));
    assert_eq!(holder.list(), ["web"]);
    assert!(old.child.wait().unwrap().success());
    // The holder keeps it; a new server is started from it.
    let mut new = fdpass()
        .args(["fetch", holder.sock(), "web", "--", "python3", SERVER])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let answer = http::wait_until_answers(util::local(port));
    assert!(
        answer.contains(&format!("hello from pid {}", new.id())),
        "{answer}"
    );
    assert!(util::terminate(&mut new).success());
}

#[test]
fn the_readme_commands_work_as_written() {
    let dir = TempDir::new("adopt-readme");
    let port = util::free_port();
    let pids = dir.join("pids");
    let blocks = util::readme_blocks("### Replace a server that cannot hand over its socket", 2);
    let script = |block: &str| util::note_pids(block, &pids).replace("8080", &port.to_string());

    let _stop = util::StopAll(pids.clone());
    util::run_script(&script(&blocks[0]));
    // http.server lists the directory it was started in.
    let _ = http::wait_until_answers(util::local(port));
    // `$!` of the second block is the old server, started in the first.
    let old = util::last_pid(&pids);
    util::run_script(&script(&blocks[1]).replace("old=$!", &format!("old={old}")));
    // The old server answers until the new one does. Each request has one
    // attempt, and every failure counts. The one the README allows: the
    // request that `http.server`, killed by SIGTERM, had in hand (reset,
    // or closed without an answer); the client has one at a time.
    let tally = std::cell::RefCell::new(Tally::default());
    wait_until(
        || {
            let answer = http::get(util::local(port));
            tally.borrow_mut().count(&answer);
            answer.is_ok_and(|answer| answer.contains("hello from pid"))
        },
        || format!("the new server never answered: {}", tally.borrow()),
    );
    let tally = tally.into_inner();
    println!("adopt README: {tally}");
    let in_hand = tally.failed_with(FailureKind::Reset) + tally.failed_with(FailureKind::Empty);
    assert!(
        in_hand <= 1 && tally.failed() == in_hand,
        "more failed than the request in hand: {tally}"
    );
    // Stopped once the new one was ready.
    let old = Process::open(old.parse().unwrap());
    wait_until(
        || old.as_ref().map_or(true, |old| old.has_exited().unwrap()),
        || "the old server is still running".into(),
    );
}

/// The tests that run fdpass as another user, which only root can: each is
/// ignored unless run with `--ignored`, which `.ci/test` does as root
/// (filtered by this module's name), so that elsewhere they show as
/// ignored, never as passed.
mod needs_root {
    use super::*;

    #[test]
    #[ignore = "needs root: runs fdpass as another user; .ci/test runs it as root"]
    fn another_user_may_not_take_a_root_process_fds() {
        util::assert_root();
        let dir = TempDir::new("adopt-nobody");
        let binary = util::fdpass_for_anyone(&dir);
        let port = util::free_port();
        let old = Python::old_server(port);
        let nobody = |args: &[&str]| {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(&binary)
                .args(args);
            cmd
        };
        let root = format!("process {} runs as uid 0, gid 0", old.pid());
        let fd = old.said[1].clone();
        fails(
            &mut nobody(&["adopt", &old.pid(), &fd, "--", "true"]),
            77,
            &format!("not permitted to take fds of process {}: {root}", old.pid()),
        );
        for args in [
            &[
                "adopt",
                &old.pid(),
                &format!("tcp:127.0.0.1:{port}"),
                "--",
                "true",
            ][..],
            &["fds", &old.pid()][..],
        ] {
            fails(
                &mut nobody(args),
                77,
                &format!(
                    "not permitted to list the fds of process {}: {root}",
                    old.pid()
                ),
            );
        }
        let out = util::output(&mut nobody(&["fds", &old.pid()]));
        assert!(stderr(&out).contains("CAP_SYS_PTRACE"), "{}", stderr(&out));
    }
}
