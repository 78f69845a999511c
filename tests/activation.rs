//! `io_fdpass::activation`: adopting the fds of the socket-activation
//! convention, from systemd's own `systemd-socket-activate` and from a
//! shell that sets the variables by hand.
//!
//! Each test re-runs this binary as the started program, so that the
//! variables and fds are that process's own; the parent checks what the
//! child did and that its own fd count is unchanged.
#![cfg(unix)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use io_fdpass::activation::{self, ListenFds};
use util::NoLeak;

/// Runs the test `name` of this binary as a child, started by `starter`
/// (a command that ends by running what follows it), runs `then` while it
/// runs, and asserts that it succeeded.
fn start(name: &str, starter: &[&str], then: impl FnOnce()) {
    // A child that does not know it is one would start another.
    assert!(
        std::env::var_os("LISTEN_FDS").is_none(),
        "started with LISTEN_FDS but not as a child test"
    );
    // systemd-socket-activate passes on only the variables it is told to.
    let child_env = format!("{}={name}", util::CHILD_ENV);
    let (mut command, pass_on): (Command, &[&str]) = match starter[0] {
        "systemd-socket-activate" => (
            util::peers::require(starter[0], &["--version"], "systemd"),
            &["-E", &child_env],
        ),
        "systemfd" => (
            util::peers::require(
                starter[0],
                &["--version"],
                "systemfd (cargo install systemfd)",
            ),
            &["--"],
        ),
        program => (Command::new(program), &[]),
    };
    let child = command
        .args(&starter[1..])
        .args(pass_on)
        .arg(std::env::current_exe().unwrap())
        .args(util::child_args(name))
        .env(util::CHILD_ENV, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    then();
    let output = child.wait_with_output().unwrap();
    util::assert_child_succeeded(name, &output);
}

/// Runs the test `name` as a child of `sh -c SCRIPT`, which sets the
/// variables (`$$` is the pid the child will have, since `exec` keeps it),
/// and checks that this process's fd count is unchanged.
fn start_by_shell(name: &str, script: &str) {
    let check = NoLeak::start();
    let script = format!("{script}; exec \"$@\"");
    start(name, &["sh", "-c", &script, "sh"], || {});
    check.assert_unchanged();
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to `addr`, waiting for it to listen.
fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{addr}: {e}"),
        }
    }
}

/// Taking the fds leaves the environment as it was: the variables are
/// meant for this pid alone, and no child of it takes them.
fn assert_variables_kept() {
    for name in ["LISTEN_PID", "LISTEN_FDS"] {
        assert!(std::env::var_os(name).is_some(), "{name} was removed");
    }
}

const TCP: &str = "a_tcp_listener_from_systemd_socket_activate";

#[test]
fn a_tcp_listener_from_systemd_socket_activate() {
    if util::is_child(TCP) {
        let mut fds = ListenFds::take().unwrap();
        assert_variables_kept();
        assert_eq!((fds.len(), fds.name(0)), (1, Some("http")));
        assert_eq!(fds.index_of("http"), Some(0));
        assert_eq!(fds.index_of("https"), None);

        // The wrong kinds say what the fd is, and leave it in place.
        let err = fds.take_unix_listener(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("listening TCP socket on"), "{err}");
        let err = fds.take_udp_socket(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

        let listener = fds.take_tcp_listener(0).unwrap();
        assert!(util::is_cloexec(&listener));
        let err = fds.take_tcp_listener(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(
            fds.take_tcp_listener(1).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(fds.take_fd(0).is_none());
        assert!(
            ListenFds::take().unwrap().is_empty(),
            "a second take is empty"
        );

        // The connection that made systemd-socket-activate start this.
        let (mut connection, _) = listener.accept().unwrap();
        connection.write_all(b"adopted").unwrap();
        return;
    }
    let check = NoLeak::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut reply = String::new();
    let starter = ["systemd-socket-activate", "-l", &addr, "--fdname=http"];
    start(TCP, &starter, || {
        // systemd-socket-activate starts the program at the first
        // connection, which the program then accepts.
        let mut stream = connect(&addr);
        stream.read_to_string(&mut reply).unwrap();
    });
    assert_eq!(reply, "adopted");
    check.assert_unchanged();
}

const UNIX: &str = "a_unix_listener_from_systemd_socket_activate";

#[test]
fn a_unix_listener_from_systemd_socket_activate() {
    if util::is_child(UNIX) {
        let mut fds = ListenFds::take().unwrap();
        assert_eq!(fds.name(0), Some("unknown"), "no names were given");
        let err = fds.take_tcp_listener(0).unwrap_err();
        assert!(
            err.to_string().contains("listening unix stream socket"),
            "{err}"
        );
        let listener = fds.take_unix_listener(0).unwrap();
        let (mut connection, _) = listener.accept().unwrap();
        connection.write_all(b"adopted").unwrap();
        return;
    }
    let check = NoLeak::start();
    let path = util::temp_path("activate.sock");
    let path = path.to_str().unwrap();
    let mut reply = String::new();
    start(UNIX, &["systemd-socket-activate", "-l", path], || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => drop(e),
                Err(e) => panic!("{path}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stream.read_to_string(&mut reply).unwrap();
    });
    assert_eq!(reply, "adopted");
    let _ = std::fs::remove_file(path);
    check.assert_unchanged();
}

const UDP: &str = "a_udp_socket_from_systemd_socket_activate";

#[test]
fn a_udp_socket_from_systemd_socket_activate() {
    if util::is_child(UDP) {
        let mut fds = ListenFds::take().unwrap();
        let err = fds.take_tcp_listener(0).unwrap_err();
        assert!(
            err.to_string().contains("a UDP socket on 127.0.0.1:"),
            "{err}"
        );
        let socket = fds.take_udp_socket(0).unwrap();
        let mut buf = [0; 16];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        socket.send_to(b"adopted", from).unwrap();
        return;
    }
    let check = NoLeak::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut reply = [0; 16];
    let mut got = 0;
    start(UDP, &["systemd-socket-activate", "-d", "-l", &addr], || {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // The first datagram starts the program; resend until it answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        while got == 0 && Instant::now() < deadline {
            client.send_to(b"ping", &addr).unwrap();
            if let Ok(n) = client.recv(&mut reply) {
                got = n;
            }
        }
    });
    assert_eq!(&reply[..got], b"adopted");
    check.assert_unchanged();
}

const SYSTEMFD: &str = "a_tcp_listener_from_systemfd";

#[test]
fn a_tcp_listener_from_systemfd() {
    if util::is_child(SYSTEMFD) {
        let mut fds = ListenFds::take().unwrap();
        assert_variables_kept();
        assert_eq!((fds.len(), fds.name(0)), (1, Some("unknown")));
        let listener = fds.take_tcp_listener(0).unwrap();
        let (mut connection, _) = listener.accept().unwrap();
        connection.write_all(b"adopted").unwrap();
        return;
    }
    let check = NoLeak::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut reply = String::new();
    start(
        SYSTEMFD,
        &["systemfd", "-s", &format!("tcp::{addr}")],
        || {
            let mut stream = connect(&addr);
            stream.read_to_string(&mut reply).unwrap();
        },
    );
    assert_eq!(reply, "adopted");
    check.assert_unchanged();
}

const OTHER: &str = "fds_meant_for_another_process_are_left_alone";

#[test]
fn fds_meant_for_another_process_are_left_alone() {
    if util::is_child(OTHER) {
        let fds = ListenFds::take().unwrap();
        assert!(fds.is_empty());
        assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"));
        assert!(
            rustix::io::fcntl_getfd(fd_number(3)).is_ok(),
            "fd 3 is still open"
        );
        assert!(!util::is_cloexec(fd_number(3)), "fd 3 is untouched");
        return;
    }
    start_by_shell(OTHER, "exec 3</dev/null; export LISTEN_PID=1 LISTEN_FDS=1");
}

const MALFORMED: &str = "a_malformed_variable_is_invalid_data_and_takes_nothing";

#[test]
fn a_malformed_variable_is_invalid_data_and_takes_nothing() {
    if util::is_child(MALFORMED) {
        let err = ListenFds::take().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("LISTEN_FDNAMES"), "{err}");
        assert_variables_kept();
        assert!(!util::is_cloexec(fd_number(3)), "fd 3 is not taken");
        assert!(ListenFds::take().unwrap().is_empty());
        return;
    }
    start_by_shell(
        MALFORMED,
        "exec 3</dev/null 4</dev/null; export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=one",
    );
}

const NOT_OPEN: &str = "a_count_past_the_open_fds_is_invalid_data";

#[test]
fn a_count_past_the_open_fds_is_invalid_data() {
    if util::is_child(NOT_OPEN) {
        let err = ListenFds::take().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("fd 4 is not open"), "{err}");
        return;
    }
    start_by_shell(
        NOT_OPEN,
        "exec 3</dev/null 4<&-; export LISTEN_PID=$$ LISTEN_FDS=2",
    );
}

const FIRST_FD: &str = "systemfds_first_fd_is_honoured";

#[test]
fn systemfds_first_fd_is_honoured() {
    if util::is_child(FIRST_FD) {
        let mut fds = ListenFds::take().unwrap();
        assert_eq!(std::env::var("LISTEN_FDS_FIRST_FD").as_deref(), Ok("5"));
        let fd = fds.take_fd(0).unwrap();
        assert_eq!(fd.as_raw_fd(), 5);
        let err = fds.take_tcp_listener(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        return;
    }
    start_by_shell(
        FIRST_FD,
        "exec 5</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDS_FIRST_FD=5",
    );
}

const WRONG_KIND: &str = "a_file_is_no_listener_and_stays_for_take_fd";

#[test]
fn a_file_is_no_listener_and_stays_for_take_fd() {
    if util::is_child(WRONG_KIND) {
        let mut fds = ListenFds::take().unwrap();
        for err in [
            fds.take_tcp_listener(0).unwrap_err(),
            fds.take_unix_listener(0).unwrap_err(),
            fds.take_udp_socket(0).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("regular file"), "{err}");
            assert!(err.to_string().contains("\"conf\""), "{err}");
        }
        let err = fds.take_unix_listener(1).unwrap_err();
        assert!(err.to_string().contains("a pipe"), "{err}");
        let file = std::fs::File::from(fds.take_fd(0).unwrap());
        assert!(file.metadata().unwrap().is_file());
        return;
    }
    // fd 3 is this test binary, fd 4 the read end of a pipe; the inner
    // shell is the process that becomes the child.
    start_by_shell(
        WRONG_KIND,
        "printf x | sh -c 'exec 4<&0 0</dev/null 3<\"$1\"; \
         export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=conf:pipe; exec \"$@\"' sh \"$@\"; \
         exit $?",
    );
}

/// Fd `n` of this process, which the test's starter opened for it.
fn fd_number(n: i32) -> BorrowedFd<'static> {
    // SAFETY: the starter opened `n` for the child, and nothing here
    // closes it.
    unsafe { BorrowedFd::borrow_raw(n) }
}

/// The fds are close-on-exec once taken, so a command this program runs
/// does not inherit them.
#[test]
fn taken_fds_are_close_on_exec_for_children() {
    const NAME: &str = "taken_fds_are_close_on_exec_for_children";
    if util::is_child(NAME) {
        let fds = ListenFds::take().unwrap();
        assert_eq!(fds.len(), 1);
        let out = Command::new("sh")
            .args(["-c", "[ -e /proc/$$/fd/3 ] && echo open || echo closed"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "closed\n");
        drop(fds);
        return;
    }
    start_by_shell(NAME, "exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1");
}

const STARTED: &str = "a_started_program_gets_its_own_variables_and_no_stale_ones";

/// What a program started by `activation::Command` finds, written to the fd
/// it is handed: the count, the names, `LISTEN_FDS_FIRST_FD` (stale here,
/// so not passed on) and whether `LISTEN_PID` is its own pid.
const REPORT: &str = r#"echo "$LISTEN_FDS $LISTEN_FDNAMES ${LISTEN_FDS_FIRST_FD-none} $([ "$LISTEN_PID" = $$ ] && echo own)" >&3"#;

/// What `script`, run by `sh` with `activation::Command`, writes to fd 3,
/// the one fd it is handed (named `out`), once it has exited with 0.
fn run_reporting(script: &str) -> String {
    let (mut read, write) = std::io::pipe().unwrap();
    let mut child = activation::Command::new("sh")
        .args(["-c", script])
        .fd("out", &write)
        .unwrap()
        .spawn()
        .unwrap();
    drop(write);
    assert!(child.wait().unwrap().success());
    assert!(
        child.try_wait().unwrap().unwrap().success(),
        "kept once reaped"
    );
    let mut out = String::new();
    read.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_started_program_gets_its_own_variables_and_no_stale_ones() {
    if util::is_child(STARTED) {
        let fds = ListenFds::take().unwrap();
        assert_eq!(fds.len(), 1);
        assert_eq!(run_reporting(REPORT), "1 out none own\n");
        return;
    }
    start_by_shell(
        STARTED,
        "exec 5</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDS_FIRST_FD=5 LISTEN_FDNAMES=old",
    );
}

#[test]
fn a_command_that_cannot_start_says_why() {
    let check = NoLeak::start();
    let missing = activation::Command::new("no-such-program-anywhere").spawn();
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    let directory = activation::Command::new("/").spawn().unwrap_err();
    assert_eq!(directory.kind(), ErrorKind::PermissionDenied, "{directory}");
    let own = activation::Command::new("sh")
        .env("LISTEN_FDS", "1")
        .spawn();
    let own = own.unwrap_err();
    assert_eq!(own.kind(), ErrorKind::InvalidInput, "{own}");
    assert!(own.to_string().contains("LISTEN_FDS"), "{own}");
    let file = std::fs::File::open("/dev/null").unwrap();
    let bad = activation::Command::new("sh").fd("a:b", &file).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    drop(file);
    check.assert_unchanged();
}

// /proc/self/status is Linux's.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn a_started_program_gets_no_blocked_signal_nor_an_ignored_sigpipe() {
    // SAFETY: sigset_t is plain data, valid zeroed; the calls take locals
    // and change this test's thread's mask only.
    let as_before = |set: &mut libc::sigset_t| unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), set);
        libc::sigismember(set, libc::SIGUSR1) == 1 && libc::sigismember(set, libc::SIGUSR2) == 0
    };
    let mut usr1: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::sigaddset(&raw mut usr1, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const usr1, std::ptr::null_mut());
    }
    let check = NoLeak::start();
    let out = run_reporting("exec grep -E '^Sig(Blk|Ign)' /proc/self/status >&3");
    check.assert_unchanged();
    let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    assert!(as_before(&mut now), "this thread's mask is as it was");
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const usr1, std::ptr::null_mut()) };

    let field = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).expect(&out);
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), 0, "{out}");
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(field("SigIgn:") & sigpipe, 0, "{out}");
}
