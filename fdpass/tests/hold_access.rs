//! What another local user, a hostile path or a stalled service manager
//! can do to `fdpass hold` and to what fdpass prints: the socket file made
//! where a user can swap paths, control characters in paths shown by
//! `list` and `fds`, and a `$NOTIFY_SOCKET` that never reads. After each
//! hostile case the holder's fd count is back where it was and it still
//! answers `list`.
#![cfg(unix)]

mod util;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use io_fdpass::holder::Client;
use util::{fdpass, s, success, with_files, Holder, TempDir};

/// A file name with a newline and an escape sequence in it.
const HOSTILE: &str = "x\n\u{1b}[31my";

#[test]
fn list_shows_a_stored_path_escaped_on_one_line() {
    let dir = TempDir::new("escape-list");
    let holder = Holder::start(&dir, &[]);
    let before = holder.fd_count();
    let hostile = dir.join(HOSTILE);
    std::fs::write(&hostile, "text").unwrap();
    success(&mut with_files(
        &["store", holder.sock(), "odd", "3"],
        &[&hostile],
    ));
    let listed = success(fdpass().args(["list", holder.sock()]));
    assert_eq!(listed.lines().count(), 1, "a forged line: {listed:?}");
    assert!(
        !listed.contains('\u{1b}'),
        "an escape reached stdout: {listed:?}"
    );
    assert!(listed.contains("x\\n\\e[31my"), "{listed:?}");
    assert!(listed.starts_with("odd "), "{listed:?}");
    success(fdpass().args(["drop", holder.sock(), "odd"]));
    holder.wait_for_fd_count(before);
    assert!(holder.list().is_empty());
}

#[test]
fn fds_shows_another_process_path_escaped() {
    let dir = TempDir::new("escape-fds");
    let hostile = dir.join(HOSTILE);
    std::fs::write(&hostile, "text").unwrap();
    let mut sleeper = Command::new("sh")
        .arg("-c")
        .arg("exec sleep 60 3<\"$0\"")
        .arg(&hostile)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    util::wait_until(
        || std::fs::read_link(format!("/proc/{pid}/fd/3")).is_ok_and(|p| p == hostile),
        || "the sleeper never opened the file".into(),
    );
    let shown = success(fdpass().args(["fds", &pid]));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(
        !shown.contains('\u{1b}'),
        "an escape reached stdout: {shown:?}"
    );
    for line in shown.lines() {
        let first = line.split(' ').next().unwrap();
        assert!(
            first.parse::<u32>().is_ok(),
            "a forged line {line:?} in {shown:?}"
        );
    }
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("3 ") && line.ends_with("x\\n\\e[31my")),
        "{shown:?}"
    );
}

/// A child process killed when dropped, so that a failed test leaves no
/// holder (or attacker) running behind it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (bounded) for `child` to end; the test fails if it does not.
fn ends(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    util::wait_until(
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
        || format!("{what}: the holder did not end"),
    );
    status.unwrap()
}

#[test]
fn a_notify_socket_that_never_reads_blocks_nothing() {
    let dir = TempDir::new("stalled-notify");
    // Bound and never read: its queue fills after a few datagrams (10 by
    // default, `net.unix.max_dgram_qlen`; 600 are sent here, more than the
    // largest common setting).
    let notify = dir.join("notify");
    let _stalled = UnixDatagram::bind(&notify).unwrap();
    let socket = dir.join("h.sock");
    let mut holder = Killed(
        fdpass()
            .args(["hold", s(&socket)])
            .env("NOTIFY_SOCKET", &notify)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new(&socket).timeout(Duration::from_secs(20));
    util::wait_until(
        || client.list().is_ok(),
        || "the holder never answered".into(),
    );
    let pid = holder.0.id();
    let count = || io_fdpass_test_support::fd_count_of(pid);
    let before = count();
    let data = dir.join("data");
    std::fs::write(&data, "held").unwrap();
    let held = File::open(&data).unwrap();
    for i in 0..300 {
        client
            .store(&format!("n{i}"), &held)
            .unwrap_or_else(|err| panic!("store {i} got no answer: {err}"));
    }
    assert_eq!(client.list().unwrap().len(), 300);
    let listed = success(fdpass().args(["list", s(&socket)]));
    assert_eq!(listed.lines().count(), 300);
    for i in 0..300 {
        client.drop(&format!("n{i}")).unwrap();
    }
    util::wait_until(
        || count() == before,
        || format!("the holder has {} fds open, not {before}", count()),
    );
    assert!(client.list().unwrap().is_empty());
    let pid = rustix::process::Pid::from_child(&holder.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = ends(&mut holder.0, "SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// The tests that run processes as other users, which only root can: each
/// is ignored unless run with `--ignored`, which `.ci/test` does as root
/// (filtered by this module's name), so that elsewhere they show as
/// ignored, never as passed.
mod needs_root {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;

    /// Swaps the socket file at `$0` for a symlink to `$1` whenever one
    /// appears there, as fast as it can: the symlink is made beforehand,
    /// so that the swap is one `rename(2)`.
    const SWAPPER: &str = r"
        my ($path, $target) = @ARGV;
        my $tmp = qq($path.swap.$$);
        symlink($target, $tmp);
        while (1) {
            next unless lstat($path) && -S _;
            rename($tmp, $path);
            symlink($target, $tmp);
        }
    ";

    /// Starts a holder at `socket` with `--mode 0640 --group nogroup`, and
    /// stops it once it has set its socket up (or ended).
    fn start_and_stop(socket: &Path) {
        let mut holder = Killed(
            fdpass()
                .args([
                    "-v",
                    "hold",
                    s(socket),
                    "--mode",
                    "0640",
                    "--group",
                    "65534",
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let log = BufReader::new(holder.0.stderr.take().unwrap());
        let mut said = Vec::new();
        for line in log.lines() {
            let line = line.unwrap();
            let up = line.contains("holding");
            said.push(line);
            if up {
                break;
            }
        }
        if holder.0.try_wait().unwrap().is_none() {
            let pid = rustix::process::Pid::from_child(&holder.0);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        }
        ends(&mut holder.0, &said.join("\n"));
    }

    #[test]
    #[ignore = "needs root: swaps paths as another user; .ci/test runs it as root"]
    fn a_user_who_swaps_the_socket_path_changes_no_file() {
        util::assert_root();
        let dir = TempDir::new("swap-access");
        std::fs::set_permissions(dir.join(""), std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
        let target = dir.join("root-only");
        std::fs::write(&target, "root's").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = open.join("h.sock");
        let swapper = Killed(
            Command::new("perl")
                .arg("-e")
                .arg(SWAPPER)
                .arg(&socket)
                .arg(&target)
                .uid(65534)
                .gid(65534)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut changed = None;
        for round in 0..300 {
            start_and_stop(&socket);
            let meta = std::fs::metadata(&target).unwrap();
            if (meta.mode() & 0o7777, meta.uid(), meta.gid()) != (0o600, 0, 0) {
                changed = Some((round, meta.mode() & 0o7777, meta.gid()));
                break;
            }
            let _ = std::fs::remove_file(&socket);
        }
        drop(swapper);
        assert_eq!(
            changed, None,
            "root's file got the socket's mode and group (round, mode, gid)"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's");
        let left: Vec<String> = std::fs::read_dir(&open)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".fdp"))
            .collect();
        assert!(left.is_empty(), "private directories left behind: {left:?}");
    }
}
