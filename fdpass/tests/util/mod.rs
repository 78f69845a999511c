//! Helpers for the end-to-end tests of the `fdpass` binary. What the
//! library's tests use too (temporary paths, fd counts, the interop peers,
//! the wait for an event, HTTP requests) is `io-fdpass-test-support`'s,
//! re-exported here.
// Each test file uses some of them.
#![allow(dead_code, unused_imports)]

pub use io_fdpass_test_support::{http, peers, wait_until, TempDir};

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub fn fdpass() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fdpass"))
}

/// `fdpass ARGS`, run from a shell that opens `files` at fds 3, 4, …
pub fn with_files(args: &[&str], files: &[&Path]) -> Command {
    let mut script = String::from("exec \"$0\" \"$@\"");
    for (i, file) in files.iter().enumerate() {
        script += &format!(" {}<'{}'", i + 3, s(file));
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_fdpass"))
        .args(args);
    cmd
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `cmd` to the end with its output captured.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run the command")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the command succeeded and returns its stdout.
pub fn success(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts the command failed with `code`, with a message on stderr that
/// contains `says`, and nothing on stdout.
pub fn fails(cmd: &mut Command, code: i32, says: &str) {
    let out = output(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{cmd:?}: {err}");
    assert!(err.contains(says), "{cmd:?}: {err:?} does not say {says:?}");
    assert!(!err.contains("panicked"), "{cmd:?}: {err}");
    assert!(out.stdout.is_empty(), "{cmd:?}: {}", stdout(&out));
}

/// Waits until something listens at `path`.
pub fn wait_for_socket(path: &Path) {
    wait_until(
        || UnixStream::connect(path).is_ok(),
        || format!("nothing listens at {}", path.display()),
    );
}

/// Waits until the socket file at `path` exists, without connecting.
pub fn wait_for_file(path: &Path) {
    wait_until(
        || path.exists(),
        || format!("{} never appeared", path.display()),
    );
}

/// Fails the test unless it runs as root. The tests that need root are
/// `#[ignore]`d, and `.ci/test` runs them with `--ignored` only as root:
/// one run some other way fails here, saying why, rather than passing
/// without having tested anything.
#[track_caller]
pub fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (it runs processes as other users): run it as root, as .ci/test does"
    );
}

/// Sends SIGTERM to `child` and waits for it.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().unwrap()
}

/// Kills the process with this pid when a failed test unwinds past it,
/// so that no process a test started outlives it.
pub struct KillOnPanic(pub u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(self.0).unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// An `fdpass hold` running at a socket in `dir`; stopped by SIGTERM when
/// dropped.
pub struct Holder {
    pub child: Child,
    pub socket: PathBuf,
}

impl Holder {
    pub fn start(dir: &TempDir, extra: &[&str]) -> Holder {
        let socket = dir.join("holder.sock");
        let child = fdpass()
            .arg("hold")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let holder = Holder { child, socket };
        holder.wait_until_serving();
        holder
    }

    /// Waits until the holder answers a whole request: by then no
    /// connection of the wait is open in it any more.
    pub fn wait_until_serving(&self) {
        let client = io_fdpass::holder::Client::new(&self.socket).timeout(Duration::from_secs(20));
        wait_until(
            || client.list().is_ok(),
            || format!("no holder answers at {}", self.socket.display()),
        );
    }

    pub fn sock(&self) -> &str {
        s(&self.socket)
    }

    /// How many fds the holder process has open.
    pub fn fd_count(&self) -> usize {
        io_fdpass_test_support::fd_count_of(self.child.id())
    }

    /// Waits until the holder has `count` fds open again, as it had before
    /// a test's clients came and went.
    pub fn wait_for_fd_count(&self, count: usize) {
        wait_until(
            || self.fd_count() == count,
            || {
                format!(
                    "the holder has {} fds open, not {count}: {:?}",
                    self.fd_count(),
                    self.open_fds()
                )
            },
        );
    }

    /// What each fd the holder process has open refers to.
    pub fn open_fds(&self) -> Vec<String> {
        io_fdpass_test_support::open_fds_of(self.child.id())
    }

    /// The names it holds: the first word of each line of `list`.
    pub fn list(&self) -> Vec<String> {
        success(fdpass().args(["list", self.sock()]))
            .lines()
            .filter_map(|line| line.split(' ').next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let status = terminate(&mut self.child);
        if !std::thread::panicking() {
            assert!(status.success(), "the holder ended with {status:?}");
            assert!(!self.socket.exists(), "the holder left its socket behind");
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 127.0.0.1:`port`, where the tests' HTTP servers listen; requests go
/// through [`http::get`] (one attempt, its failure counted) and
/// [`http::wait_until_answers`] (the wait for a server to start).
pub fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A copy of the binary under test in `dir`, which another user can run
/// wherever the checkout is.
pub fn fdpass_for_anyone(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let anyone = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.join(""), anyone.clone()).unwrap();
    let binary = dir.join("fdpass");
    // A hard link where the two share a filesystem, and otherwise a copy
    // written by another process (see copy_executable).
    if std::fs::hard_link(env!("CARGO_BIN_EXE_fdpass"), &binary).is_err() {
        copy_executable(Path::new(env!("CARGO_BIN_EXE_fdpass")), &binary);
    }
    std::fs::set_permissions(&binary, anyone).unwrap();
    binary
}

/// Copies the executable `from` to a new file `to` with `cp`, so that no fd
/// of this process is ever open for writing on it: a process another test
/// forks while a copy is written here would keep that fd until it execs,
/// and running the copy meanwhile fails with "Text file busy".
pub fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {}: {status:?}",
        from.display(),
        to.display()
    );
}

/// The first `count` shell blocks of the README section under `heading`.
pub fn readme_blocks(heading: &str, count: usize) -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("the README has no section {heading:?}"));
    let blocks: Vec<String> = section
        .split("```sh\n")
        .skip(1)
        .take(count)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect();
    assert_eq!(blocks.len(), count, "shell blocks under {heading:?}");
    blocks
}

/// `block` with the pid of each command it starts in the background
/// noted in the file `pids`, so that a test can stop them all at the end.
pub fn note_pids(block: &str, pids: &Path) -> String {
    block.lines().fold(String::new(), |script, line| {
        if line.ends_with('&') {
            format!("{script}{line}\necho $! >> {}\n", pids.display())
        } else {
            format!("{script}{line}\n")
        }
    })
}

/// The last pid noted in `pids`.
pub fn last_pid(pids: &Path) -> String {
    let noted = std::fs::read_to_string(pids).unwrap();
    noted.lines().last().unwrap().to_owned()
}

/// Runs `script` with bash from the repository root, with the fdpass
/// under test first on PATH, stopping at the first command that fails.
pub fn run_script(script: &str) {
    let bin = Path::new(env!("CARGO_BIN_EXE_fdpass")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let status = Command::new("bash")
        .args(["-c", &format!("set -e\n{script}")])
        .env("PATH", &path)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

/// Stops, when dropped, every process whose pid is listed in the file.
pub struct StopAll(pub PathBuf);

impl Drop for StopAll {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(&self.0).unwrap_or_default();
        for pid in pids.lines().filter_map(|pid| pid.parse().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}
