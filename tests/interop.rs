//! The wire format against peers written elsewhere: Perl's `IO::FDPass` (Debian
//! `libio-fdpass-perl`) and Python's `socket.send_fds`/`recv_fds`, in both
//! directions.

#![cfg(unix)]

mod util;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use io_fdpass::{recv_fd, recv_fds, recv_many, send_fd, send_fds, send_many, MAX_BURST};
use util::peers::{perl, python};
use util::{accept, file_with, listener, read_all, NoLeak};

/// Starts `cmd` with `args`, its stdout captured.
fn spawn(mut cmd: Command, args: &[&str]) -> Child {
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the peer")
}

/// Waits for the peer and returns its stdout, failing with its stderr.
fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "peer failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A file on disk with `text` in it, removed when dropped.
struct NamedFile(std::path::PathBuf);

impl NamedFile {
    fn new(text: &str) -> Self {
        let path = util::temp_path("named");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        NamedFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for NamedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `cmd` with `args` as a peer that connects to a fresh listening
/// socket, whose path replaces each `SOCK` in `args`; calls `talk` with the
/// accepted connection, closes it and returns the peer's stdout once the
/// peer has exited.
fn with_peer(cmd: Command, args: &[&str], talk: impl FnOnce(&UnixStream)) -> String {
    let (listener, sock) = listener();
    let args: Vec<&str> = args
        .iter()
        .map(|&arg| {
            if arg == "SOCK" {
                sock.to_str().unwrap()
            } else {
                arg
            }
        })
        .collect();
    let child = spawn(cmd, &args);
    let stream = accept(&listener, 20).unwrap();
    talk(&stream);
    drop((stream, listener));
    let out = finish(child);
    std::fs::remove_file(&sock).unwrap();
    out
}

const PERL_SEND: &str = r#"
    my ($path, $file, $count) = @ARGV;
    my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
    open my $fh, '<', $file or die "open: $!";
    for (1 .. $count) {
        IO::FDPass::send(fileno $s, fileno $fh) or die "send: $!";
    }
"#;

const PERL_RECV: &str = r#"
    my ($path, $count) = @ARGV;
    my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
    for (1 .. $count) {
        my $fd = IO::FDPass::recv(fileno $s);
        $fd >= 0 or die "recv: $!";
        open my $fh, '<&=', $fd or die "fdopen: $!";
        sysseek $fh, 0, 0;
        sysread $fh, my $text, 100;
        print "$text\n";
        close $fh;
    }
"#;

#[test]
fn perl_sends_and_we_receive() {
    let check = NoLeak::start();
    let file = NamedFile::new("from perl");
    with_peer(
        perl(),
        &["-e", PERL_SEND, "SOCK", file.path(), "100"],
        |stream| {
            for _ in 0..100 {
                assert_eq!(read_all(recv_fd(stream).unwrap()), "from perl");
            }
        },
    );
    check.assert_unchanged();
}

#[test]
fn we_send_and_perl_receives() {
    let check = NoLeak::start();
    let file = file_with("from rust");
    let out = with_peer(perl(), &["-e", PERL_RECV, "SOCK", "100"], |stream| {
        for _ in 0..100 {
            send_fd(stream, &file).unwrap();
        }
    });
    assert_eq!(out, "from rust\n".repeat(100));
    drop(file);
    check.assert_unchanged();
}

const PYTHON_SEND: &str = r#"
import os, socket, sys
path, file = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
fd = os.open(file, os.O_RDONLY)
for _ in range(100):
    socket.send_fds(s, [b"\0"], [fd])
# A batch: data and several fds in one message.
socket.send_fds(s, [b"batch of three"], [fd, fd, fd])
"#;

const PYTHON_RECV: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for _ in range(100):
    msg, fds, flags, addr = socket.recv_fds(s, 1, 1)
    assert msg == b"\0" and len(fds) == 1 and flags == 0, (msg, fds, flags)
    print(os.pread(fds[0], 100, 0).decode())
    os.close(fds[0])
msg, fds, flags, addr = socket.recv_fds(s, 64, 253)
assert flags == 0, flags
print(msg.decode(), len(fds), *(os.pread(fd, 100, 0).decode() for fd in fds))
"#;

#[test]
fn python_sends_and_we_receive() {
    let check = NoLeak::start();
    let file = NamedFile::new("from python");
    with_peer(
        python(),
        &["-c", PYTHON_SEND, "SOCK", file.path()],
        |stream| {
            for _ in 0..100 {
                assert_eq!(read_all(recv_fd(stream).unwrap()), "from python");
            }
            let mut data = [0; 64];
            let mut fds = [const { None }; 8];
            let got = recv_fds(stream, &mut data, &mut fds).unwrap();
            assert!(got.is_complete());
            assert_eq!(&data[..got.bytes], b"batch of three");
            assert_eq!(got.fds_received, 3);
            for fd in fds.into_iter().flatten() {
                assert_eq!(read_all(fd), "from python");
            }
        },
    );
    check.assert_unchanged();
}

#[test]
fn we_send_and_python_receives() {
    let check = NoLeak::start();
    let file = file_with("from rust");
    let out = with_peer(python(), &["-c", PYTHON_RECV, "SOCK"], |stream| {
        for _ in 0..100 {
            send_fd(stream, &file).unwrap();
        }
        send_fds(stream, b"batch", &[file.as_fd(), file.as_fd()]).unwrap();
    });
    assert_eq!(
        out,
        "from rust\n".repeat(100) + "batch 2 from rust from rust\n"
    );
    drop(file);
    check.assert_unchanged();
}

/// Receives `n` fds with `recv_many`, checking each reads `text`.
fn receive_bursts(stream: &UnixStream, n: usize, text: &str) {
    let mut fds = [const { None }; MAX_BURST];
    let mut got = 0;
    while got < n {
        let burst = recv_many(stream, &mut fds).unwrap();
        assert_eq!(burst.rejected, 0, "{:?}", burst.first_rejection);
        for fd in fds.iter_mut().filter_map(Option::take) {
            assert_eq!(read_all(fd), text);
            got += 1;
        }
    }
    assert_eq!(got, n);
}

/// Sends `fd` `n` times with `send_many`.
fn send_bursts(stream: &UnixStream, fd: impl AsFd, n: usize) {
    let fds = vec![fd.as_fd(); n];
    let mut sent = 0;
    while sent < n {
        sent += send_many(stream, &fds[sent..]).unwrap();
    }
}

#[test]
fn perl_sends_a_thousand_and_we_receive_in_bursts() {
    let check = NoLeak::start();
    let file = NamedFile::new("from perl");
    let args = ["-e", PERL_SEND, "SOCK", file.path(), "1000"];
    with_peer(perl(), &args, |stream| {
        receive_bursts(stream, 1000, "from perl");
    });
    check.assert_unchanged();
}

#[test]
fn we_send_a_thousand_in_bursts_and_perl_receives() {
    let check = NoLeak::start();
    let file = file_with("burst");
    let args = ["-e", PERL_RECV, "SOCK", "1000"];
    let out = with_peer(perl(), &args, |stream| send_bursts(stream, &file, 1000));
    assert_eq!(out, "burst\n".repeat(1000));
    drop(file);
    check.assert_unchanged();
}

const PYTHON_SEND_MANY: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
fd = os.open(sys.argv[2], os.O_RDONLY)
for _ in range(int(sys.argv[3])):
    socket.send_fds(s, [b"\0"], [fd])
"#;

const PYTHON_RECV_MANY: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
texts = set()
for _ in range(int(sys.argv[2])):
    msg, fds, flags, addr = socket.recv_fds(s, 1, 4)
    assert msg == b"\0" and len(fds) == 1 and flags == 0, (msg, fds, flags)
    texts.add(os.pread(fds[0], 100, 0).decode())
    os.close(fds[0])
print(*texts)
"#;

#[test]
fn python_sends_a_thousand_and_we_receive_in_bursts() {
    let check = NoLeak::start();
    let file = NamedFile::new("from python");
    let args = ["-c", PYTHON_SEND_MANY, "SOCK", file.path(), "1000"];
    with_peer(python(), &args, |stream| {
        receive_bursts(stream, 1000, "from python");
    });
    check.assert_unchanged();
}

#[test]
fn we_send_a_thousand_in_bursts_and_python_receives() {
    let check = NoLeak::start();
    let file = file_with("burst");
    let args = ["-c", PYTHON_RECV_MANY, "SOCK", "1000"];
    let out = with_peer(python(), &args, |stream| send_bursts(stream, &file, 1000));
    assert_eq!(out, "burst\n");
    drop(file);
    check.assert_unchanged();
}
