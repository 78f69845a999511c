//! A real systemd for the tests: this machine's own systemd booted as PID 1
//! of a container by `systemd-nspawn`, with the unit files a test writes,
//! driven from outside with `nsenter … systemctl`.
//!
//! The container sees this machine's `/usr` read-only and a fresh `/etc`
//! and `/tmp` (`--volatile=yes`), a network of its own with only a loopback
//! (`--private-network`), the unit files of [`Machine::units`] as
//! `/etc/systemd/system`, and the directory [`Machine::shared`] as
//! `/shared`: the binaries under test go there. It boots into an idle
//! target that starts only the journal, so that nothing runs but what a
//! test starts. nspawn's filter of system calls lets `pidfd_getfd` through,
//! which `fdpass adopt` needs.
//!
//! [`Client`] makes requests from inside the container's network, each one
//! counted, and [`reload_twice`] reloads a unit under it and follows its
//! main process.
//!
//! Where nspawn cannot run (no root, no `systemd-nspawn`, no namespaces),
//! [`Machine::boot`] says why on stderr and returns `None`, and the test
//! says it was skipped: it never passes silently.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{self, Tally};
use crate::TempDir;

/// How long systemd may take to boot, or to halt, on a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The idle target the container boots into.
const IDLE_TARGET: &str = "io-fdpass-idle.target";

/// A booted systemd in a container; halted, and waited for, when dropped.
pub struct Machine {
    nspawn: Child,
    leader: u32,
    name: String,
    units: TempDir,
    shared: TempDir,
    log: PathBuf,
}

/// Why the tests of real systemd cannot run here, or `None` when they can.
fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: systemd-nspawn needs root".into());
    }
    if find("systemd-nspawn").is_none() {
        return Some(
            "systemd-nspawn is missing (Debian's package systemd-container has it)".into(),
        );
    }
    if find("nsenter").is_none() {
        return Some("nsenter is missing (Debian's package util-linux has it)".into());
    }
    // Namespaces: a pid and mount namespace is what nspawn makes first.
    match Command::new("unshare")
        .args(["--pid", "--mount", "--net", "--fork", "true"])
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "this machine cannot make namespaces: unshare says {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare to probe namespaces: {e}")),
    }
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/bin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.exists())
}

impl Machine {
    /// Boots systemd in a container named after `test`, with `units`
    /// (file name and text) in its `/etc/systemd/system` and `binaries`
    /// linked (or copied) into its `/shared`, each under its own file name.
    /// `None`, said on stderr, where the tests of real systemd cannot run
    /// (see the module's documentation). Under CI (`CI` set) a machine that
    /// should run them and cannot is a failure, not a skip.
    ///
    /// # Panics
    ///
    /// When the container does not boot, or systemd does not reach its
    /// idle target in time.
    pub fn boot(test: &str, units: &[(&str, String)], binaries: &[&Path]) -> Option<Machine> {
        if let Some(why) = cannot_run() {
            assert!(
                std::env::var_os("CI").is_none() || !why.contains("missing"),
                "under CI the tests of real systemd must run: {why}"
            );
            crate::skipped(test, &format!("systemd cannot run here: {why}"));
            return None;
        }
        let units_dir = TempDir::new("systemd-units");
        let shared = TempDir::new("systemd-shared");
        std::fs::write(
            units_dir.join(IDLE_TARGET),
            "[Unit]\nDescription=Nothing but what a test starts, and the journal\n\
             Wants=systemd-journald.service\nAfter=systemd-journald.service\n",
        )
        .unwrap();
        for (name, text) in units {
            std::fs::write(units_dir.join(name), text).unwrap();
        }
        for binary in binaries {
            let to = shared.join(binary.file_name().unwrap().to_str().unwrap());
            if std::fs::hard_link(binary, &to).is_err() {
                std::fs::copy(binary, &to).unwrap();
            }
        }
        // Machine names are host names: short, letters, digits and dashes.
        static BOOTS: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "fdpass-{}-{}",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::Relaxed)
        );
        let log = shared.join("nspawn.log");
        let nspawn = Command::new("systemd-nspawn")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args(["-q", "-D", "/", "--volatile=yes", "--register=no"])
            .args(["--keep-unit", "--private-network", "-M", &name])
            // nspawn's own filter refuses pidfd_getfd, which `fdpass
            // adopt` takes fds with.
            .arg("--system-call-filter=pidfd_getfd")
            .arg(format!("--bind={}:/shared", shared.path().display()))
            .arg(format!(
                "--bind-ro={}:/etc/systemd/system",
                units_dir.path().display()
            ))
            .args(["-b", &format!("systemd.unit={IDLE_TARGET}")])
            .arg("systemd.firstboot=off")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start systemd-nspawn");
        let mut machine = Machine {
            leader: 0,
            nspawn,
            name,
            units: units_dir,
            shared,
            log,
        };
        machine.leader = machine.wait_for_leader();
        let booted = machine.wait_booted();
        assert!(
            booted,
            "systemd did not reach {IDLE_TARGET}; nspawn said:\n{}",
            machine.nspawn_log()
        );
        eprintln!(
            "booted systemd as pid {} in container {}",
            machine.leader, machine.name
        );
        Some(machine)
    }

    /// The container's PID 1, as this machine sees it: the child of
    /// `systemd-nspawn` that runs systemd.
    fn wait_for_leader(&mut self) -> u32 {
        let nspawn = self.nspawn.id();
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                panic!(
                    "systemd-nspawn exited ({status}) before systemd started:\n{}",
                    self.nspawn_log()
                );
            }
            if let Some(leader) = children(nspawn).into_iter().find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            }) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not start in the container:\n{}",
                self.nspawn_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until systemd has booted: `systemctl is-system-running
    /// --wait` says `running` or `degraded`.
    fn wait_booted(&mut self) -> bool {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if self.nspawn.try_wait().unwrap().is_some() {
                return false;
            }
            let out = self.nsenter(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout);
            if matches!(state.trim(), "running" | "degraded") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// What `systemd-nspawn` and the container's console said.
    #[must_use]
    pub fn nspawn_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The directory seen as `/shared` in the container.
    #[must_use]
    pub fn shared(&self) -> &TempDir {
        &self.shared
    }

    /// The directory seen as `/etc/systemd/system` in the container. Unit
    /// files written here later count after [`daemon_reload`](Machine::daemon_reload).
    #[must_use]
    pub fn units(&self) -> &TempDir {
        &self.units
    }

    /// The container's PID 1 as this machine sees it.
    #[must_use]
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// Runs `args` in the container (every namespace of its PID 1), to the
    /// end, its output captured.
    #[must_use]
    pub fn nsenter(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Runs `args` in the container, and panics unless it succeeds; its
    /// standard output.
    #[track_caller]
    #[allow(clippy::must_use_candidate)] // most callers want only the success
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.nsenter(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal(),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS` in the container, which must succeed.
    #[track_caller]
    #[allow(clippy::must_use_candidate)] // most callers want only the success
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["systemctl"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `systemctl daemon-reload`: the unit files written since count.
    pub fn daemon_reload(&self) {
        self.systemctl(&["daemon-reload"]);
    }

    /// Writes the unit file `name`, and reloads systemd's units.
    pub fn add_unit(&self, name: &str, text: &str) {
        std::fs::write(self.units.join(name), text).unwrap();
        self.daemon_reload();
    }

    /// The property `property` of `unit`, as `systemctl show` says it.
    #[must_use]
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-P", property, unit])
            .trim()
            .to_owned()
    }

    /// `MainPID` of `unit`, as the container numbers pids.
    #[must_use]
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().unwrap()
    }

    /// Waits until `unit` is in the state `wanted` (`ActiveState`).
    #[track_caller]
    pub fn wait_state(&self, unit: &str, wanted: &str) {
        crate::wait_until(
            || self.show(unit, "ActiveState") == wanted,
            || {
                format!(
                    "{unit} is {}, not {wanted}:\n{}",
                    self.show(unit, "ActiveState"),
                    self.journal()
                )
            },
        );
    }

    /// `kill -9` of the unit's main process (`systemctl kill
    /// --kill-whom=main -s KILL UNIT`), then the wait until systemd has
    /// started it again (`Restart=`): a new `MainPID`, and active. Only
    /// the main process: the whole cgroup's kill walks the cgroup tree,
    /// which in a container on a loaded machine has failed with EIO.
    #[track_caller]
    pub fn kill_9(&self, unit: &str) {
        let pid = self.main_pid(unit);
        self.systemctl(&["kill", "--kill-whom=main", "-s", "KILL", unit]);
        crate::wait_until(
            || {
                let now = self.main_pid(unit);
                now != pid && now != 0 && self.show(unit, "ActiveState") == "active"
            },
            || format!("{unit} did not start again:\n{}", self.journal()),
        );
    }

    /// The journal of this boot, for the message of a failure.
    #[must_use]
    pub fn journal(&self) -> String {
        let out = self.nsenter(&["journalctl", "-b", "--no-pager", "-o", "short-monotonic"]);
        let text = String::from_utf8_lossy(&out.stdout);
        // Not the users made at boot: lines of no interest.
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.contains("systemd-sysusers"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        format!(
            "journal (its last {} lines):\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Runs `f` on a thread of this process that is in the container's
    /// network, so that it reaches the services there at 127.0.0.1. The
    /// thread's other namespaces stay this process's.
    pub fn in_network<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let netns = std::fs::File::open(format!("/proc/{}/ns/net", self.leader))
            .expect("open the container's network namespace");
        std::thread::spawn(move || {
            enter_network(&netns).expect("enter the container's network namespace");
            drop(netns);
            f()
        })
    }
}

/// What the client has seen: every request counted, and the pids that
/// answered.
#[derive(Default)]
pub struct Seen {
    /// Every request, failures by kind.
    pub tally: Tally,
    /// How many were answered.
    pub answers: usize,
    /// The pids that answered.
    pub by: BTreeSet<u32>,
    /// The pid that answered last.
    pub last: Option<u32>,
}

/// A client in the container's network, making one request after
/// another until stopped, each answered with the pid that served it
/// (`served by pid N`, as `examples/restart.rs` answers).
pub struct Client {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    /// Starts making requests to 127.0.0.1:`port` in the container: waits
    /// for the first answer (the one wait that may retry: the service
    /// starts), then counts every request.
    #[must_use]
    pub fn start(machine: &Machine, port: u16) -> Client {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = machine.in_network({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                let _ = http::wait_until_answers(addr);
                while !stop.load(Ordering::Relaxed) {
                    let answer = http::get_pid(addr);
                    let mut seen = seen.lock().unwrap();
                    seen.tally.count(&answer);
                    if let Ok(pid) = answer {
                        seen.answers += 1;
                        seen.by.insert(pid);
                        seen.last = Some(pid);
                    }
                }
            }
        });
        Client {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `pid` has answered `n` more requests than now.
    pub fn wait_for_answers_by(&self, pid: u32, n: usize, machine: &Machine) {
        let mut from = None;
        crate::wait_until(
            || {
                let seen = self.seen.lock().unwrap();
                if seen.last != Some(pid) {
                    return false;
                }
                let start = *from.get_or_insert(seen.answers);
                seen.answers >= start + n
            },
            || {
                let seen = self.seen.lock().unwrap();
                format!(
                    "pid {pid} did not answer {n} requests: {}; by {:?}\n{}",
                    seen.tally,
                    seen.by,
                    machine.journal()
                )
            },
        );
    }

    /// Stops the client: what it saw.
    #[must_use]
    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut self.seen.lock().unwrap())
    }

    /// Stops the client, and checks that no request failed and that the
    /// answers came from the processes `served_by`, and no other.
    #[track_caller]
    pub fn finish(self, served_by: &[u32], machine: &Machine) {
        let seen = self.stop();
        seen.tally.assert_none_failed();
        assert_eq!(
            seen.by,
            served_by.iter().copied().collect(),
            "answers came from pids other than {served_by:?}:\n{}",
            machine.journal()
        );
        println!(
            "{} answers from {served_by:?}, {}",
            seen.answers, seen.tally
        );
    }
}

impl Drop for Client {
    /// Stops the requests of a client that a failed test left running.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reloads `unit` twice under `client`: each time a new generation
/// becomes the main process, the old one exits, the unit stays active,
/// and the new one answers. Returns the generations, the first included;
/// systemd restarted none of them.
#[must_use]
pub fn reload_twice(machine: &Machine, unit: &str, client: &Client) -> Vec<u32> {
    machine.wait_state(unit, "active");
    let mut generations = vec![machine.main_pid(unit)];
    client.wait_for_answers_by(generations[0], 50, machine);
    for _ in 0..2 {
        let old = *generations.last().unwrap();
        machine.systemctl(&["reload", unit]);
        crate::wait_until(
            || {
                let pid = machine.main_pid(unit);
                pid != old && pid != 0
            },
            || format!("MainPID of {unit} is still {old}:\n{}", machine.journal()),
        );
        let next = machine.main_pid(unit);
        // The old generation exits once it has finished: then systemd
        // would have stopped the unit, had it not followed the next.
        crate::wait_until(
            || {
                !machine
                    .nsenter(&["test", "-e", &format!("/proc/{old}")])
                    .status
                    .success()
            },
            || format!("generation {old} did not exit:\n{}", machine.journal()),
        );
        client.wait_for_answers_by(next, 50, machine);
        assert_eq!(
            machine.show(unit, "ActiveState"),
            "active",
            "{}",
            machine.journal()
        );
        assert_eq!(machine.main_pid(unit), next, "{}", machine.journal());
        generations.push(next);
    }
    assert_eq!(machine.show(unit, "NRestarts"), "0");
    println!("{unit}: generations {generations:?}");
    generations
}

/// Moves the calling thread into the network namespace `netns`.
fn enter_network(netns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns takes an fd that `netns` keeps open, and a flag; it
    // changes only the calling thread's namespace.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pids whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The parent is the second field after the command's ")".
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM to nspawn halts the container's systemd.
        let _ = send_signal(self.nspawn.id(), libc::SIGTERM);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    match unsafe { libc::kill(pid as i32, signal) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The unit file `text` as a test uses it: every `/usr/local/bin/` replaced
/// by `/shared/`, where the binaries under test are. Nothing else changes,
/// so that the test tries the unit file as shipped.
#[must_use]
pub fn as_tested(text: &str) -> String {
    text.replace("/usr/local/bin/", "/shared/")
}
