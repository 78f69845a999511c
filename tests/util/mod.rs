//! The helpers of the library's integration tests on Unix. What fdpass's
//! tests use too (the leak check, temporary paths, the interop peers, the
//! wait for an event, HTTP requests) is
//! `io-fdpass-test-support`'s, re-exported here.
// Each test file uses some of them.
#![allow(dead_code, unused_imports)]

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

pub use io_fdpass_test_support::{
    fd_count, http, open_fds, peers, temp_path, wait_until, NoLeak, WAIT_TIMEOUT,
};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

#[cfg(target_os = "linux")]
pub mod faults;

/// A connected pair of unix sockets of type `ty`, close-on-exec.
pub fn pair(ty: SocketType) -> (OwnedFd, OwnedFd) {
    #[cfg(not(fdpass_apple))]
    let pair = socketpair(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None);
    // Apple's socketpair has no close-on-exec flag; no test here forks
    // between the two calls.
    #[cfg(fdpass_apple)]
    let pair =
        socketpair(AddressFamily::UNIX, ty, SocketFlags::empty(), None).and_then(|(a, b)| {
            for fd in [&a, &b] {
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
            }
            Ok((a, b))
        });
    pair.expect("socketpair")
}

pub fn all_types() -> [(&'static str, SocketType); 3] {
    [
        ("stream", SocketType::STREAM),
        ("seqpacket", SocketType::SEQPACKET),
        ("dgram", SocketType::DGRAM),
    ]
}

/// A temporary file holding `text`, already unlinked.
pub fn file_with(text: &str) -> File {
    let path = temp_path("file");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("temp file");
    std::fs::remove_file(&path).expect("unlink temp file");
    file.write_all(text.as_bytes()).unwrap();
    file.rewind().unwrap();
    file
}

/// Reads a file made by [`file_with`] from its start through `fd`, without
/// moving the file offset that every copy of the fd shares.
pub fn read_all(fd: OwnedFd) -> String {
    use std::os::unix::fs::FileExt;
    let mut buf = [0; 256];
    let n = File::from(fd).read_at(&mut buf, 0).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Whether the fd has close-on-exec set.
pub fn is_cloexec(fd: impl AsFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

/// The binary of the example `name`, which `cargo test` builds beside the
/// tests (those of the `restart` family need `--features tokio`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with cargo test --features tokio, which builds the examples",
        path.display()
    );
    path
}

/// The `fdpass` binary, which `cargo test --workspace` builds beside the
/// tests.
pub fn fdpass_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("fdpass");
    assert!(
        path.exists(),
        "{} is missing: run the tests with cargo test --workspace, which builds fdpass",
        path.display()
    );
    path
}

/// Asserts that this process has no child left, running or unreaped.
#[track_caller]
pub fn assert_no_child() {
    match rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {
        Err(rustix::io::Errno::CHILD) => {}
        other => panic!("a child is left behind: {other:?}"),
    }
}

/// Set in a child run of a test binary, to the name of the test to run.
pub const CHILD_ENV: &str = "IO_FDPASS_TEST_CHILD";

/// Runs the test `name` of this test binary again in a child process, with
/// [`is_child`] true there, and asserts that the child succeeded. For tests
/// that change process-wide state (rlimits, signal dispositions).
pub fn run_in_child(name: &str) {
    let check = NoLeak::start();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args(child_args(name)).env(CHILD_ENV, name);
    assert_child_succeeded(name, &child.output().expect("re-run the test binary"));
    check.assert_unchanged();
}

/// The arguments that make this test binary run just the test `name`, for
/// a child that [`is_child`] tells apart by [`CHILD_ENV`].
pub fn child_args(name: &str) -> [&str; 4] {
    [name, "--exact", "--test-threads=1", "--nocapture"]
}

/// Asserts that the child run of test `name` succeeded, showing its output
/// otherwise.
pub fn assert_child_succeeded(name: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "child test {name} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process is the child that [`run_in_child`] started for `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
}

/// A listening unix socket at a fresh path, and the path.
pub fn listener() -> (std::os::unix::net::UnixListener, PathBuf) {
    let path = temp_path("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    (listener, path)
}

/// Accepts one connection, giving up (as an error) after `secs` seconds.
pub fn accept(listener: &std::os::unix::net::UnixListener, secs: u64) -> io::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no peer connected"));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The leak check, after a first runtime has made the fds that tokio
/// keeps for the process (its signal pipe, with the `signal` feature the
/// tests turn on). The first runtime is made under the check's lock, so
/// that no other test is counting meanwhile.
pub fn no_leak_after_tokio() -> NoLeak {
    static WARM: std::sync::Once = std::sync::Once::new();
    let serial = NoLeak::start();
    WARM.call_once(|| {
        drop(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
    });
    drop(serial);
    NoLeak::start()
}
