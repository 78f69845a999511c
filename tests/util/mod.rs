//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

pub mod peers;

use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

static SERIAL: Mutex<()> = Mutex::new(());

/// Checks that the process's open-fd count is the same at the end of a test
/// as at its start. Tests in one binary run on parallel threads, so every
/// test that holds one is serialised with the others through a lock.
pub struct NoLeak {
    before: usize,
    _serial: MutexGuard<'static, ()>,
}

impl NoLeak {
    pub fn start() -> Self {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        NoLeak {
            before: fd_count(),
            _serial: serial,
        }
    }

    /// Asserts the fd count now equals the count at `start` plus `extra`.
    pub fn assert_plus(&self, extra: usize) {
        assert_eq!(
            fd_count(),
            self.before + extra,
            "open fds: {} at the start, expected {} more now; open now: {:?}",
            self.before,
            extra,
            open_fds()
        );
    }

    pub fn assert_unchanged(&self) {
        self.assert_plus(0);
    }
}

/// How many fds this process has open.
pub fn fd_count() -> usize {
    // The directory handle itself is counted too, the same every time.
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// What each open fd of this process refers to, for failure messages.
pub fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

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

/// A fresh path in the temp directory (nothing is created there).
pub fn temp_path(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "io-fdpass-test-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Whether the fd has close-on-exec set.
pub fn is_cloexec(fd: impl AsFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
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
