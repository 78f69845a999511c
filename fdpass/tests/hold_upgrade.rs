//! `fdpass hold`'s upgrade by SIGHUP loses no fd: not at more than half
//! the open-file limit, not when the new binary fails at start, and a stop
//! asked for while the upgrade waits for a client is a stop.
#![cfg(unix)]

mod util;

use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::holder::Client;
use util::{s, TempDir};

/// `PROGRAM -v hold SOCKET ARGS` at an open-file limit of `limit`, if
/// given, with what it logs kept line by line.
struct Logged {
    child: Child,
    socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(program: &Path, socket: &Path, args: &[&str], limit: Option<u64>) -> Logged {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.args(["-v", "hold", s(socket)])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = limit {
            // SAFETY: setrlimit is a plain system call, async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = rustix::process::Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(lines).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let holder = Logged {
            child,
            socket: socket.to_owned(),
            log,
        };
        holder.wait_for_log("hold: holding", 1);
        holder
    }

    /// Waits until `count` lines of the log say `what`.
    fn wait_for_log(&self, what: &str, count: usize) {
        let said = || {
            let log = self.log.lock().unwrap();
            log.iter().filter(|line| line.contains(what)).count()
        };
        util::wait_until(
            || said() >= count,
            || {
                format!(
                    "{what:?} not logged {count} times: {:?}",
                    self.log.lock().unwrap()
                )
            },
        );
    }

    fn client(&self) -> Client {
        Client::new(&self.socket).timeout(Duration::from_secs(20))
    }

    fn names(&self) -> Vec<String> {
        let entries = self.client().entries().unwrap();
        entries.into_iter().map(|entry| entry.name).collect()
    }
}

impl Drop for Logged {
    /// A test that failed leaves no holder running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stores `count` copies of `file` under `fd0`, `fd1`, …
fn store_many(client: &Client, file: &Path, count: usize) -> Vec<String> {
    let file = std::fs::File::open(file).unwrap();
    let mut names: Vec<String> = (0..count).map(|i| format!("fd{i}")).collect();
    for name in &names {
        client.store(name, &file).unwrap();
    }
    names.sort();
    names
}

fn hup(pid: u32) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

fn term(pid: u32) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

// prlimit(2), which lowers the limit of a running holder, is Linux's.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn sighup_at_more_than_half_the_fd_limit_loses_nothing() {
    let dir = TempDir::new("upgrade-limit");
    let data = dir.join("data");
    std::fs::write(&data, "held").unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_fdpass"));
    // A holder refuses stores past about half its limit, so the 40 names
    // go in under a higher limit, which is then lowered to 64 under it
    // (as an operator may, or as a start from more fds than that leaves
    // it): the upgrade meets more than half the limit in use.
    let mut holder = Logged::start(binary, &dir.join("h.sock"), &[], Some(256));
    let names = store_many(&holder.client(), &data, 40);
    let pid = holder.child.id();
    let lower = rustix::process::Rlimit {
        current: Some(64),
        maximum: Some(64),
    };
    let target = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap());
    rustix::process::prlimit(target, rustix::process::Resource::Nofile, lower).unwrap();
    let first = io_fdpass_test_support::fd_count_of(pid);
    assert!(first > 32, "only {first} fds: not past half the limit");

    hup(pid);
    holder.wait_for_log("hold: holding", 2);
    assert_eq!(holder.names(), names, "names lost in the upgrade");
    // The first image had fds it inherited, which no later one keeps: the
    // count after one upgrade is what each next one must come back to.
    let before = io_fdpass_test_support::fd_count_of(pid);
    assert!(
        before <= first,
        "{before} fds after the upgrade, {first} before"
    );
    hup(pid);
    holder.wait_for_log("hold: holding", 3);
    assert_eq!(holder.names(), names, "names lost in the second upgrade");
    assert!(
        holder.child.try_wait().unwrap().is_none(),
        "the holder ended: {:?}",
        holder.log.lock().unwrap()
    );
    util::wait_until(
        || io_fdpass_test_support::fd_count_of(pid) == before,
        || {
            format!(
                "{} fds after the upgrade, not {before}: {:?}",
                io_fdpass_test_support::fd_count_of(pid),
                io_fdpass_test_support::open_fds_of(pid)
            )
        },
    );
    let status = util::terminate(&mut holder.child);
    assert!(status.success(), "{status:?}");
}

/// The pid of the process, other than `not`, whose command line names
/// `socket`.
fn holder_at(socket: &Path, not: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let named = cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == socket.as_os_str().as_encoded_bytes());
            (pid != not && named).then_some(pid)
        })
}

#[test]
fn a_new_binary_that_fails_at_start_loses_nothing() {
    let dir = TempDir::new("upgrade-broken");
    let binary = util::fdpass_for_anyone(&dir);
    let socket = dir.join("h.sock");
    let data = dir.join("data");
    std::fs::write(&data, "held").unwrap();
    let mut holder = Logged::start(&binary, &socket, &[], None);
    let names = store_many(&holder.client(), &data, 5);
    let pid = holder.child.id();
    // An upgrade that works, for the fd count of an image that inherited
    // nothing but what it holds.
    hup(pid);
    holder.wait_for_log("hold: holding", 2);
    assert_eq!(holder.names(), names);
    let before = io_fdpass_test_support::fd_count_of(pid);

    // A new binary that says its version but cannot start, installed as a
    // package upgrade does: renamed over the old.
    let broken = dir.join("fdpass.new");
    std::fs::write(
        &broken,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo fdpass 99; exit 0; }\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &binary).unwrap();
    hup(pid);
    // The image of that pid fails; the previous binary carries on.
    holder.child.wait().unwrap();
    let mut next = None;
    util::wait_until(
        || {
            next = holder_at(&socket, pid);
            next.is_some() && holder.client().entries().is_ok()
        },
        || format!("no holder took over: {:?}", holder.log.lock().unwrap()),
    );
    let next = next.unwrap();
    let _stop = util::KillOnPanic(next);
    assert_eq!(holder.names(), names, "names lost in the failed upgrade");
    let shown = util::success(util::fdpass().args(["fetch", s(&socket), "fd3", "--", "cat"]));
    assert_eq!(shown, "");
    util::wait_until(
        || io_fdpass_test_support::fd_count_of(next) == before,
        || {
            format!(
                "{} fds in the holder that took over, not {before}: {:?}",
                io_fdpass_test_support::fd_count_of(next),
                io_fdpass_test_support::open_fds_of(next)
            )
        },
    );
    term(next);
    util::wait_until(
        || !socket.exists(),
        || "the holder that took over did not stop".into(),
    );
}

#[test]
fn sigterm_while_an_upgrade_waits_for_a_client_stops_the_holder() {
    let dir = TempDir::new("upgrade-term");
    let binary = Path::new(env!("CARGO_BIN_EXE_fdpass"));
    let socket = dir.join("h.sock");
    let mut holder = Logged::start(binary, &socket, &["--client-timeout", "120s"], None);
    let pid = holder.child.id();
    let before = io_fdpass_test_support::fd_count_of(pid);
    // A client that sent half a request and waits.
    let slow = UnixStream::connect(&socket).unwrap();
    (&slow).write_all(b"li").unwrap();
    util::wait_until(
        || io_fdpass_test_support::fd_count_of(pid) > before,
        || "the holder never took the slow client".into(),
    );

    hup(pid);
    holder.wait_for_log("SIGHUP: upgrading once", 1);
    term(pid);
    util::wait_until(
        || holder.child.try_wait().unwrap().is_some(),
        || format!("the holder did not stop: {:?}", holder.log.lock().unwrap()),
    );
    let status = holder.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the holder left its socket behind");
    drop(slow);
}
