//! What the tests of io-fdpass and of fdpass share: the leak check, kept
//! apart from the other tests that open fds, fresh temporary paths, the peers
//! written elsewhere that the interop tests talk to, the wait for an event,
//! and the HTTP requests of the restart tests, each counted.
//!
//! The open-descriptor count behind [`NoLeak`] is the OS's own: the fds in
//! `/proc/self/fd` on Unix, `GetProcessHandleCount` on Windows, and under
//! Wine, whose `GetProcessHandleCount` says 0 whatever is open, this
//! process's entries in the system's handle table
//! (`NtQuerySystemInformation(SystemExtendedHandleInformation)`). A count
//! that cannot be taken fails the test.
//!
//! On Windows the count covers every thread's handles, and under Wine each
//! thread that has used Winsock holds an event until it ends: the test
//! binaries that count run there with `--test-threads=1`, so that no
//! other test's thread ends during a count (`.ci/cross`).

#![warn(missing_docs, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub mod http;
pub mod peers;
#[cfg(target_os = "linux")]
pub mod systemd;

#[cfg(unix)]
#[path = "unix.rs"]
mod sys;
#[cfg(windows)]
#[path = "windows.rs"]
mod sys;
#[cfg(not(any(unix, windows)))]
compile_error!("the tests run on Unix and Windows only");

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use sys::set_pass_pidfd;
#[cfg(unix)]
pub use sys::{fd_count, fd_count_of, open_fds, open_fds_of};
#[cfg(windows)]
pub use sys::{
    handle_count, no_af_unix, skip_with_af_unix, skip_without_af_unix, stale_socket_file,
};

/// The fd table (on Windows, the handle table) is the process's, shared by
/// the tests of a binary, which libtest runs on parallel threads: a count
/// means something only while no other test opens or closes one. Each
/// [`NoLeak`] holds this exclusively, each [`OpensFds`] shared.
static FDS: RwLock<()> = RwLock::new(());

thread_local! {
    /// Whether this thread holds [`FDS`]: taking it again would deadlock.
    #[cfg_attr(
        windows,
        expect(
            clippy::missing_const_for_thread_local,
            reason = "said of this const initializer by clippy for Windows"
        )
    )]
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Notes that this thread now holds [`FDS`], failing the test, rather than
/// deadlocking it, when it held it already.
#[track_caller]
fn hold() {
    assert!(
        !HOLDING.replace(true),
        "this test holds a NoLeak or an OpensFds already: drop it before taking another"
    );
}

/// Checks that the process's count of open fds (on Windows, handles) is
/// the same at the end of a test as at its start.
///
/// Tests in one binary run on parallel threads and share the fd table, so
/// the count is taken while no other test runs that opens fds: the tests
/// holding a `NoLeak` run one at a time, and in a binary where any test
/// holds one, every other test holds an [`OpensFds`] for the whole of its
/// run, its setup included.
pub struct NoLeak {
    before: usize,
    open_before: String,
    _serial: RwLockWriteGuard<'static, ()>,
}

impl NoLeak {
    /// Waits for the other tests holding a `NoLeak` or an [`OpensFds`] to
    /// end, then notes the count. On Windows, first makes what Winsock
    /// makes once per process, and under Wine once per thread, and keeps.
    ///
    /// # Panics
    ///
    /// When this thread holds a `NoLeak` or an [`OpensFds`] already.
    #[track_caller]
    pub fn start() -> Self {
        hold();
        // A test that failed while holding the lock left nothing behind
        // that the next one depends on.
        let serial = FDS.write().unwrap_or_else(PoisonError::into_inner);
        #[cfg(windows)]
        sys::warm_up();
        NoLeak {
            before: sys::open_count(),
            open_before: sys::what_is_open(),
            _serial: serial,
        }
    }

    /// The check, with the count taken after `setup` has run: for what a
    /// test opens first and keeps to its end (a runtime's own handles).
    /// The setup runs while no other test that opens fds runs, as the
    /// count does.
    ///
    /// # Panics
    ///
    /// As [`NoLeak::start`].
    #[track_caller]
    pub fn after<T>(setup: impl FnOnce() -> T) -> (Self, T) {
        let mut check = NoLeak::start();
        let made = setup();
        check.before = sys::open_count();
        check.open_before = sys::what_is_open();
        (check, made)
    }

    /// Asserts the count now equals the count at `start` plus `extra`.
    #[track_caller]
    pub fn assert_plus(&self, extra: usize) {
        assert_eq!(
            settled_count(self.before + extra),
            self.before + extra,
            "open {}: {} at the start{}, expected {extra} more now{}",
            sys::OPEN,
            self.before,
            self.open_before,
            sys::what_is_open(),
        );
    }

    /// Asserts the count now equals the count at `start`.
    #[track_caller]
    pub fn assert_unchanged(&self) {
        self.assert_plus(0);
    }
}

/// How long a count may take to come back to what a check expects, where
/// handles may be listed after they are closed ([`sys::closes_late`]).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The count now; where handles may be listed after they are closed
/// (under Wine), counted again for up to [`SETTLE`] while it is not
/// `expected`. There, on a machine loaded enough that a test binary ran
/// ten times slower, the system's handle table once listed two handles
/// more after a test (a file, and one whose type has no name), which could
/// not be seen again. So a handle closed up to 2 s late passes there, and
/// one left open fails. Elsewhere the count is taken once.
fn settled_count(expected: usize) -> usize {
    let mut count = sys::open_count();
    if count != expected && sys::closes_late() {
        let deadline = std::time::Instant::now() + SETTLE;
        while count != expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            count = sys::open_count();
        }
    }
    count
}

impl Drop for NoLeak {
    fn drop(&mut self) {
        HOLDING.set(false);
    }
}

/// Held for the whole run of a test that opens fds (on Windows, handles)
/// without counting them, in a binary where another test counts them with
/// a [`NoLeak`]: that count waits until this test has ended, and this test
/// waits for the count. Tests holding one run side by side.
///
/// Spawning a process opens fds too (`/dev/null`, pipes), and so does every
/// connection, listener and file: take it on the test's first line.
pub struct OpensFds {
    _shared: RwLockReadGuard<'static, ()>,
}

impl OpensFds {
    /// Waits until no test holds a [`NoLeak`].
    ///
    /// # Panics
    ///
    /// When this thread holds a [`NoLeak`] or an `OpensFds` already.
    #[track_caller]
    #[must_use = "the test is kept apart from fd counts only while this is held"]
    pub fn start() -> Self {
        hold();
        OpensFds {
            _shared: FDS.read().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Drop for OpensFds {
    fn drop(&mut self) {
        HOLDING.set(false);
    }
}

/// How long [`wait_until`] waits before the test fails.
pub const WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `ready` until it holds, failing with `why` if it has not after
/// [`WAIT_TIMEOUT`]. The timeout only keeps a broken test from hanging:
/// nothing is asserted of how long the wait took.
#[track_caller]
pub fn wait_until(mut ready: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Says on stderr, past the test harness's capture of `eprintln!`, that
/// `test` was skipped, and `why`: a skip shows even when the test is
/// reported as passed.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// A fresh path in the temp directory, with `what` in its name (nothing is
/// created there).
pub fn temp_path(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "io-fdpass-test-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A fresh directory at a [`temp_path`], removed with what is in it when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory.
    #[must_use]
    pub fn new(what: &str) -> Self {
        let dir = temp_path(what);
        std::fs::create_dir_all(&dir).expect("create a temp directory");
        TempDir(dir)
    }

    /// The directory's path.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The path of `name` in the directory.
    #[must_use]
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of the entries in the directory, sorted.
    #[must_use]
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read the temp directory")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
