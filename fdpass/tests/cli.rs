//! `fdpass` end to end, with real processes: Perl's `IO::FDPass` and Python's
//! `socket` module on the other end, socket-activated commands, every bad
//! input. The holder has tests of its own, in holder.rs.
#![cfg(unix)]

mod util;

use std::process::Stdio;

use util::peers::{perl, python};
use util::{fails, fdpass, s, stderr, success, with_files, Holder, TempDir};

/// A shell command that lists the fds it has, then prints what fd 3 (and 4)
/// read and the socket-activation variables. The list goes straight to
/// stdout, before anything else: the shell's own ends of a pipe
/// (`ls | wc -l`) would be listed too whenever `ls` ran before the shell
/// had closed them, and as the last command `ls` may replace the shell and
/// list its own.
const SHOW: &str = r#"ls -m /proc/$$/fd; cat <&3; [ "$LISTEN_FDS" = 2 ] && cat <&4; echo " fds=$LISTEN_FDS names=$LISTEN_FDNAMES pid=$([ "$LISTEN_PID" = $$ ] && echo ok)""#;

/// Starts `fdpass recv SOCKET ARGS -- sh -c SHOW` and waits for its socket.
fn recv_show(dir: &TempDir, args: &[&str]) -> (std::process::Child, std::path::PathBuf) {
    let sock = dir.join("recv.sock");
    let child = fdpass()
        .arg("recv")
        .arg(&sock)
        .args(args)
        .args(["--", "sh", "-c", SHOW])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_for_file(&sock);
    (child, sock)
}

/// What the command of [`recv_show`] printed, once it has succeeded.
fn shown(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    util::stdout(&out)
}

fn file(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn perl_sends_to_fdpass_recv() {
    let dir = TempDir::new("perl-send");
    let data = file(&dir, "data", "from perl");
    let (child, sock) = recv_show(&dir, &[]);
    let script = r#"my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!";
        open my $fh, '<', $ARGV[1] or die; IO::FDPass::send(fileno $s, fileno $fh) or die "send: $!";"#;
    success(perl().args(["-e", script, s(&sock), s(&data)]));
    // 0-2 and fd 3: nothing else was inherited.
    assert_eq!(
        shown(child),
        "0, 1, 2, 3\nfrom perl fds=1 names=unknown pid=ok\n"
    );
    assert!(!sock.exists(), "recv left its socket behind");
}

#[test]
fn python_sends_two_fds_in_one_message_to_fdpass_recv() {
    let dir = TempDir::new("python-send");
    let (one, two) = (file(&dir, "one", "first"), file(&dir, "two", "second"));
    let (child, sock) = recv_show(&dir, &["-n", "2", "--name", "a", "--name", "b"]);
    let script = r#"import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
socket.send_fds(s, [b"\0"], [os.open(sys.argv[2], os.O_RDONLY), os.open(sys.argv[3], os.O_RDONLY)])"#;
    success(python().args(["-c", script, s(&sock), s(&one), s(&two)]));
    assert_eq!(
        shown(child),
        "0, 1, 2, 3, 4\nfirstsecond fds=2 names=a:b pid=ok\n"
    );
}

#[test]
fn fdpass_send_to_perl() {
    let dir = TempDir::new("send-perl");
    let (one, two) = (file(&dir, "one", "first"), file(&dir, "two", "second"));
    let sock = dir.join("perl.sock");
    let script = r#"my $l = IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 1) or die "listen: $!";
        my $c = $l->accept or die;
        for (1 .. 2) { my $fd = IO::FDPass::recv(fileno $c); $fd >= 0 or die "recv: $!";
            open my $fh, '<&=', $fd or die; sysread $fh, my $t, 100; print "$t\n"; }"#;
    let child = perl()
        .args(["-e", script, s(&sock)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_for_file(&sock);
    success(&mut with_files(
        &["send", s(&sock), "3", "4"],
        &[&one, &two],
    ));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n");
}

#[test]
fn fdpass_send_batch_to_python() {
    let dir = TempDir::new("send-python");
    let (one, two) = (file(&dir, "one", "first"), file(&dir, "two", "second"));
    let sock = dir.join("python.sock");
    let script = r"import os, socket, sys
l = socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen()
c, _ = l.accept()
msg, fds, flags, _ = socket.recv_fds(c, 16, 8)
print(msg, flags, *(os.pread(fd, 100, 0).decode() for fd in fds))";
    let child = python()
        .args(["-c", script, s(&sock)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_for_file(&sock);
    let args = ["send", s(&sock), "3", "4", "--batch", "-v"];
    success(&mut with_files(&args, &[&one, &two]));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "b'\\x00' 0 first second\n"
    );
}

#[test]
fn a_python_server_adopts_what_fdpass_listen_opens() {
    let dir = TempDir::new("listen");
    let port = util::free_port();
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server.py");
    let mut child = fdpass()
        .args([
            "listen",
            &format!("tcp:127.0.0.1:{port}"),
            "--",
            "python3",
            server,
        ])
        .spawn()
        .unwrap();
    let answer = util::http::wait_until_answers(util::local(port));
    assert!(
        answer.contains(&format!("hello from pid {}", child.id())),
        "{answer}"
    );
    util::terminate(&mut child);
    drop(dir);
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let top = success(fdpass().arg("--help"));
    assert!(top.contains("Exit status:") && top.contains("69"), "{top}");
    for command in [
        "send", "recv", "listen", "adopt", "fds", "hold", "store", "fetch", "list", "drop",
    ] {
        let help = success(fdpass().args([command, "--help"]));
        assert!(help.contains("Example"), "{command}: {help}");
    }
}

#[test]
fn bad_input_gets_a_clear_message_and_creates_nothing() {
    let dir = TempDir::new("bad");
    let sock = dir.join("x.sock");
    let x = s(&sock);
    let unix = format!("unix:{x}");

    // Usage errors: exit 64, nothing created.
    fails(fdpass().arg("frobnicate"), 64, "unrecognized subcommand");
    fails(
        fdpass().args(["recv", x, "-n", "0", "--", "true"]),
        64,
        "-n",
    );
    fails(fdpass().args(["recv", x, "true"]), 64, "");
    fails(
        fdpass().args(["listen", &unix, "tcp:nohost", "--", "true"]),
        64,
        "tcp:HOST:PORT",
    );
    fails(
        fdpass().args(["store", x, "bad:name", "0"]),
        64,
        "cannot name fds",
    );
    fails(fdpass().args(["send", x, "-1"]), 64, "");
    fails(
        fdpass().args(["recv", x, "--name", "a", "--name", "b", "--", "true"]),
        64,
        "2 names given for 1 fd",
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());

    // A command that cannot be found: noticed before the socket exists.
    fails(
        fdpass().args(["recv", x, "--", "no-such-command-here"]),
        127,
        "command not found: no-such-command-here",
    );
    fails(
        fdpass().args(["listen", &unix, "--", "./no/such/file"]),
        127,
        "command not found",
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());

    // An fd that is not open.
    fails(fdpass().args(["send", x, "7"]), 66, "fd 7 is not open");
    // Nothing listening, or no holder running.
    fails(fdpass().args(["send", x, "0"]), 69, "nothing is listening");
    fails(fdpass().args(["list", x]), 69, "is the holder running");
    // A path that is not a socket is never replaced.
    let plain = file(&dir, "plain", "keep me");
    fails(
        fdpass().args(["recv", s(&plain), "--", "true"]),
        73,
        "not a socket",
    );
    fails(fdpass().args(["hold", s(&plain)]), 73, "not a socket");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
    // A live socket is not taken over.
    let holder = Holder::start(&dir, &[]);
    fails(
        fdpass().args(["hold", holder.sock()]),
        73,
        "another process is listening",
    );
    // A name that is not held.
    fails(
        fdpass().args(["fetch", holder.sock(), "nothing", "--", "true"]),
        66,
        "no fd named nothing",
    );
    fails(
        fdpass().args(["drop", holder.sock(), "nothing"]),
        66,
        "no fd named nothing",
    );
    assert_eq!(holder.list(), Vec::<String>::new());
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let sock = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let holder = Holder {
        child: fdpass().args(["hold", s(&sock)]).spawn().unwrap(),
        socket: sock,
    };
    holder.wait_until_serving();
    assert_eq!(holder.list(), Vec::<String>::new());
}
