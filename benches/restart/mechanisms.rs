//! The ways of restarting a server that the benchmark sets side by side:
//! each starts a server on 127.0.0.1, restarts it when told, and stops it.
//!
//! A restart returns once it is over for the one who restarts: the next
//! generation serves and the previous one has been told to go (it may
//! still be finishing its requests). Every process started, and every
//! process they start, is this process's to reap: it is the subreaper of
//! them all.

use std::fs;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use io_fdpass::activation;
use io_fdpass::notify;
use rustix::net::{sockopt, AddressFamily, SocketType};
use rustix::process::{kill_process, kill_process_group, waitpid, Pid, Signal, WaitOptions};

use crate::load::Mode;

/// How long a server may take to start, or a restart to be over.
const SETTLE: Duration = Duration::from_secs(30);

/// The mechanisms, in the order the tables list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `io_fdpass::restart`: SIGHUP to the server, which starts its next
    /// generation with its listener (and, in keep-alive mode, its
    /// connections).
    Restart,
    /// `fdpass hold` keeps the listener; each generation is started with
    /// `fdpass fetch`, and the previous one is stopped once it is ready (in
    /// keep-alive mode, handing its connections to the next through the
    /// holder: `hyper_restart --holder`).
    Holder,
    /// Stop the server, then start the next, which binds again.
    Naive,
    /// Start the next server on a socket of its own bound with
    /// `SO_REUSEPORT`, then stop the previous one.
    ReusePort,
    /// `HAProxy` in master-worker mode, reloaded by SIGUSR2 to the master,
    /// its listeners passed to the new worker (`expose-fd listeners`).
    Haproxy,
    /// nginx's binary upgrade: USR2 to the master, WINCH and QUIT to the
    /// old master once the new one runs.
    Nginx,
    /// A server never restarted, measured the same way.
    Control,
    /// A server never restarted, while at each restart the same server is
    /// started on another port, waited for until ready and told to go:
    /// what starting a generation costs the one serving on this machine,
    /// with nothing handed over.
    Alongside,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Restart,
        Kind::Holder,
        Kind::Naive,
        Kind::ReusePort,
        Kind::Haproxy,
        Kind::Nginx,
        Kind::Control,
        Kind::Alongside,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Restart => "io_fdpass::restart",
            Kind::Holder => "fdpass hold+fetch",
            Kind::Naive => "naive rebind",
            Kind::ReusePort => "SO_REUSEPORT",
            Kind::Haproxy => "HAProxy 2.6 -W",
            Kind::Nginx => "nginx upgrade",
            Kind::Control => "never restarted",
            Kind::Alongside => "started alongside",
        }
    }

    /// Its name on the command line (`--only`, and `--records` files).
    pub fn option(self) -> &'static str {
        match self {
            Kind::Restart => "restart",
            Kind::Holder => "holder",
            Kind::Naive => "naive",
            Kind::ReusePort => "reuseport",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
            Kind::Control => "control",
            Kind::Alongside => "alongside",
        }
    }

    /// Whether this mechanism is io-fdpass's own: the targets apply.
    pub fn is_ours(self) -> bool {
        matches!(self, Kind::Restart | Kind::Holder)
    }

    /// Whether it is a control: a server never restarted.
    pub fn is_control(self) -> bool {
        matches!(self, Kind::Control | Kind::Alongside)
    }

    /// The programs it needs besides this benchmark's builds, if any.
    pub fn needs(self) -> Option<&'static str> {
        match self {
            Kind::Haproxy => Some("haproxy"),
            Kind::Nginx => Some("nginx"),
            _ => None,
        }
    }
}

/// The builds the servers run.
pub struct Programs {
    /// `examples/restart.rs`: HTTP/1.0, a connection per request.
    pub restart: PathBuf,
    /// `examples/hyper_restart.rs`: HTTP/1.1 keep-alive on hyper.
    pub hyper: PathBuf,
    /// The `fdpass` tool.
    pub fdpass: PathBuf,
}

impl Programs {
    /// The server of io-fdpass's examples for `mode`.
    fn server(&self, mode: Mode) -> &Path {
        match mode {
            Mode::Close => &self.restart,
            Mode::KeepAlive(_) => &self.hyper,
        }
    }
}

/// A server running under one mechanism.
pub trait Server {
    /// Restarts it: returns once the next generation serves and the
    /// previous one has been told to go.
    fn restart(&mut self) -> io::Result<()>;
    /// Stops every process of it.
    fn stop(&mut self);
}

/// Starts a server under `kind` at a free port of 127.0.0.1, serving.
pub fn start(
    kind: Kind,
    mode: Mode,
    programs: &Programs,
    dir: &Path,
) -> io::Result<(Box<dyn Server>, SocketAddr)> {
    let addr = free_addr()?;
    let server = Example {
        program: programs.server(mode).to_owned(),
        addr,
        log: dir.join("server.log"),
    };
    let started: Box<dyn Server> = match kind {
        Kind::Restart => Box::new(SelfRestart::start(server)?),
        Kind::Holder => Box::new(Held::start(server, mode, &programs.fdpass, dir)?),
        Kind::Naive => Box::new(Rebind::start(server, Again::Naive)?),
        Kind::Control => Box::new(Rebind::start(server, Again::Never)?),
        Kind::Alongside => Box::new(Rebind::start(server, Again::Alongside)?),
        Kind::ReusePort => Box::new(ReusePort::start(server)?),
        Kind::Haproxy => Box::new(Haproxy::start(addr, dir)?),
        Kind::Nginx => Box::new(Nginx::start(addr, dir)?),
    };
    Ok((started, addr))
}

/// A port of 127.0.0.1 that nothing listens on now.
fn free_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(pid as i32).expect("a pid is positive")
}

fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    kill_process(pid_of(pid), signal).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("signal {signal:?} to {pid}"),
        )
    })
}

/// Reaps every child and orphan of this process that has exited.
pub fn reap() {
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
}

/// Whether `pid` runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The processes whose parent is `parent`, alive: from the `children`
/// file of each of its threads, a few reads where a scan of `/proc` would
/// take hundreds, on the benchmark's own cores, in the very milliseconds
/// it measures.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Polls `done` (reaping meanwhile) until it holds or `SETTLE` passes.
fn settle(what: &str, mut done: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        reap();
        if done() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("{what}: not within {SETTLE:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asks each of `pids` to stop (`sig`), then kills what is left of them
/// and of their process groups after `SETTLE`.
fn stop_all(pids: &[u32], sig: Signal) {
    for &pid in pids {
        let _ = signal(pid, sig);
    }
    if settle("stop", || pids.iter().all(|&pid| !alive(pid))).is_err() {
        for &pid in pids {
            let _ = kill_process_group(pid_of(pid), Signal::KILL);
            let _ = kill_process(pid_of(pid), Signal::KILL);
        }
        let _ = settle("kill", || pids.iter().all(|&pid| !alive(pid)));
    }
}

/// An io-fdpass example server to start at an address.
struct Example {
    program: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
}

impl Example {
    /// The error `e`, with what the servers wrote last.
    fn with_log(&self, e: io::Error) -> io::Error {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        if tail.is_empty() {
            return e;
        }
        io::Error::new(
            e.kind(),
            format!("{e} (the servers wrote: {})", tail.join(" | ")),
        )
    }
}

/// One generation of an io-fdpass example server, its standard error
/// appended to `log`: bound to `addr` itself, or given `listener`; started
/// with a `NOTIFY_SOCKET` of this process, on which it says when it is
/// ready.
fn spawn_example(example: &Example, listener: Option<&OwnedFd>) -> io::Result<u32> {
    let notify = notify::Listener::new()?;
    let mut command = activation::Command::new("/bin/sh")
        .args(["-c", "exec \"$0\" \"$1\" >/dev/null 2>>\"$2\""])
        .arg(&example.program)
        .arg(example.addr.to_string())
        .arg(&example.log)
        .env("NOTIFY_SOCKET", notify.path())
        .process_group(0);
    if let Some(listener) = listener {
        command = command.fd("http", listener)?;
    }
    let pid = command.spawn()?.id();
    wait_ready(&notify, pid)?;
    Ok(pid)
}

/// Waits for `READY=1` from `pid` on `notify`.
fn wait_ready(notify: &notify::Listener, pid: u32) -> io::Result<()> {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        reap();
        if !alive(pid) {
            return Err(io::Error::other(format!(
                "server {pid} exited before it was ready"
            )));
        }
        if notify
            .wait_ready(Some(Duration::from_millis(50)))?
            .is_some()
        {
            return Ok(());
        }
    }
    Err(io::Error::new(
        ErrorKind::TimedOut,
        format!("server {pid} not ready within {SETTLE:?}"),
    ))
}

/// The generations of an io-fdpass server: the one serving, and those
/// told to go, which may still finish their work.
struct Pids {
    current: u32,
    old: Vec<u32>,
}

impl Pids {
    fn new(current: u32) -> Pids {
        Pids {
            current,
            old: Vec::new(),
        }
    }

    /// `next` serves now; the one that served is told to go (SIGTERM).
    fn overlap(&mut self, next: u32) -> io::Result<()> {
        let old = std::mem::replace(&mut self.current, next);
        self.old.push(old);
        signal(old, Signal::TERM)
    }

    /// Stops every generation.
    fn stop(&self) {
        let mut all = self.old.clone();
        all.push(self.current);
        stop_all(&all, Signal::TERM);
    }
}

/// `io_fdpass::restart`, driven as its users drive it: SIGHUP to the
/// generation serving.
struct SelfRestart {
    example: Example,
    pids: Pids,
}

impl SelfRestart {
    fn start(example: Example) -> io::Result<SelfRestart> {
        let pids = Pids::new(spawn_example(&example, None)?);
        Ok(SelfRestart { example, pids })
    }
}

impl Server for SelfRestart {
    fn restart(&mut self) -> io::Result<()> {
        let old = self.pids.current;
        signal(old, Signal::HUP)?;
        // The next generation is the old one's child until the old one
        // exits, once the next is ready and it has finished its work; then
        // it is this process's.
        let mut next = None;
        settle("the next generation", || {
            if next.is_none() {
                next = children_of(old).first().copied();
            }
            if next.is_none() && !alive(old) {
                next = children_of(std::process::id()).first().copied();
            }
            next.is_some() && !alive(old)
        })
        .map_err(|e| self.example.with_log(e))?;
        self.pids.current = next.expect("settled");
        Ok(())
    }

    fn stop(&mut self) {
        self.pids.stop();
    }
}

/// A server stopped and started again naively (stop, then bind), or
/// never restarted: one of the controls.
struct Rebind {
    example: Example,
    pids: Pids,
    again: Again,
}

/// What [`Rebind`] does at a restart.
#[derive(Clone, Copy)]
enum Again {
    /// Stops the server, then starts the next, which binds again.
    Naive,
    /// Nothing.
    Never,
    /// Starts the same server on another port, waits until it is ready,
    /// and tells it to go.
    Alongside,
}

impl Rebind {
    fn start(example: Example, again: Again) -> io::Result<Rebind> {
        let pids = Pids::new(spawn_example(&example, None)?);
        Ok(Rebind {
            example,
            pids,
            again,
        })
    }
}

impl Server for Rebind {
    fn restart(&mut self) -> io::Result<()> {
        match self.again {
            Again::Never => Ok(()),
            Again::Naive => {
                let old = self.pids.current;
                signal(old, Signal::TERM)?;
                settle("the old server's exit", || !alive(old))?;
                self.pids.current = spawn_example(&self.example, None)?;
                Ok(())
            }
            Again::Alongside => {
                // Started as `fdpass fetch` is (a `posix_spawn` through
                // std), so that only the start is measured, and not a fork
                // of this process, which runs the load.
                let mut command = Command::new(&self.example.program);
                command.arg(free_addr()?.to_string()).stderr(Stdio::null());
                let started = spawn_ready(&mut command)?;
                // Told to go as a previous generation is, and stopped with
                // them.
                self.pids.old.push(started);
                signal(started, Signal::TERM)
            }
        }
    }

    fn stop(&mut self) {
        self.pids.stop();
    }
}

/// Each generation on a socket of its own in one `SO_REUSEPORT` group.
struct ReusePort {
    example: Example,
    pids: Pids,
}

/// A listening socket at `addr` that shares the port (`SO_REUSEPORT`).
fn reuseport_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    sockopt::set_socket_reuseport(&socket, true)?;
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, 1024)?;
    Ok(socket)
}

impl ReusePort {
    fn start(example: Example) -> io::Result<ReusePort> {
        let listener = reuseport_listener(example.addr)?;
        let pids = Pids::new(spawn_example(&example, Some(&listener))?);
        Ok(ReusePort { example, pids })
    }
}

impl Server for ReusePort {
    fn restart(&mut self) -> io::Result<()> {
        let listener = reuseport_listener(self.example.addr)?;
        let next = spawn_example(&self.example, Some(&listener))?;
        drop(listener);
        self.pids.overlap(next)
    }

    fn stop(&mut self) {
        self.pids.stop();
    }
}

/// `fdpass hold` with the listener, each generation under `fdpass fetch`.
struct Held {
    example: Example,
    /// Whether each generation is told the holder's socket, to hand its
    /// connections to the next through it (`hyper_restart --holder`).
    hands_over: bool,
    fdpass: PathBuf,
    socket: PathBuf,
    hold: u32,
    /// None until the first generation serves.
    pids: Option<Pids>,
}

impl Held {
    fn start(example: Example, mode: Mode, fdpass: &Path, dir: &Path) -> io::Result<Held> {
        let addr = example.addr;
        let socket = dir.join("fds.sock");
        let hold = Command::new(fdpass)
            .arg("hold")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?
            .id();
        let mut held = Held {
            example,
            hands_over: matches!(mode, Mode::KeepAlive(_)),
            fdpass: fdpass.to_owned(),
            socket,
            hold,
            pids: None,
        };
        settle("the holder's socket", || held.socket.exists())?;
        let stored = Command::new(&held.fdpass)
            .arg("listen")
            .arg(format!("tcp:{addr}"))
            .arg("--")
            .arg(&held.fdpass)
            .arg("store")
            .arg(&held.socket)
            .args(["http", "3"])
            .stdin(Stdio::null())
            .status()?;
        if !stored.success() {
            held.stop();
            return Err(io::Error::other(format!("fdpass listen … store: {stored}")));
        }
        match held.fetch() {
            Ok(pid) => held.pids = Some(Pids::new(pid)),
            Err(e) => {
                held.stop();
                return Err(held.example.with_log(e));
            }
        }
        Ok(held)
    }

    /// One generation: `fdpass fetch SOCKET http -- SERVER`, with
    /// `--holder SOCKET` in keep-alive mode, ready.
    fn fetch(&self) -> io::Result<u32> {
        let mut command = Command::new(&self.fdpass);
        command
            .arg("fetch")
            .arg(&self.socket)
            .args(["http", "--"])
            .arg(&self.example.program);
        if self.hands_over {
            command.arg("--holder").arg(&self.socket);
        }
        command.stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.example.log)?,
        );
        spawn_ready(&mut command)
    }
}

/// Starts `command` with no stdin or stdout, in a process group of its
/// own and with a `NOTIFY_SOCKET` of this process, and waits until it
/// says it is ready; stops it if it does not.
fn spawn_ready(command: &mut Command) -> io::Result<u32> {
    let notify = notify::Listener::new()?;
    let pid = command
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()?
        .id();
    wait_ready(&notify, pid).inspect_err(|_| stop_all(&[pid], Signal::KILL))?;
    Ok(pid)
}

impl Server for Held {
    fn restart(&mut self) -> io::Result<()> {
        let next = self.fetch()?;
        self.pids.as_mut().expect("started").overlap(next)
    }

    fn stop(&mut self) {
        if let Some(pids) = &self.pids {
            pids.stop();
        }
        stop_all(&[self.hold], Signal::TERM);
    }
}

/// GETs until one is answered: the one wait that retries, while a server
/// that is not this benchmark's starts.
fn wait_until_answers(addr: SocketAddr) -> io::Result<()> {
    settle("the first answer", || {
        io_fdpass_test_support::http::get(addr).is_ok()
    })
}

/// `HAProxy` in master-worker mode, answering by itself.
struct Haproxy {
    master: u32,
}

impl Haproxy {
    fn start(addr: SocketAddr, dir: &Path) -> io::Result<Haproxy> {
        let config = dir.join("haproxy.cfg");
        fs::write(
            &config,
            format!(
                "global\n\
                 \x20   nbthread 1\n\
                 \x20   stats socket {stats} mode 600 level admin expose-fd listeners\n\
                 defaults\n\
                 \x20   mode http\n\
                 \x20   timeout connect 5s\n\
                 \x20   timeout client 300s\n\
                 \x20   timeout server 300s\n\
                 \x20   timeout http-keep-alive 300s\n\
                 frontend web\n\
                 \x20   bind {addr}\n\
                 \x20   http-request return status 200 content-type text/plain \
                 lf-string \"served by pid %pid\\n\"\n",
                stats = dir.join("haproxy.sock").display(),
            ),
        )?;
        let master = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?
            .id();
        let haproxy = Haproxy { master };
        if let Err(e) = wait_until_answers(addr) {
            stop_all(&[master], Signal::TERM);
            return Err(e);
        }
        Ok(haproxy)
    }
}

impl Server for Haproxy {
    fn restart(&mut self) -> io::Result<()> {
        let before = children_of(self.master);
        signal(self.master, Signal::USR2)?;
        settle("HAProxy's new worker", || {
            children_of(self.master)
                .iter()
                .any(|pid| !before.contains(pid))
        })
    }

    fn stop(&mut self) {
        stop_all(&[self.master], Signal::TERM);
    }
}

/// nginx, daemonized (its binary upgrade needs it), answering by itself.
struct Nginx {
    pid_file: PathBuf,
    master: u32,
}

impl Nginx {
    fn start(addr: SocketAddr, dir: &Path) -> io::Result<Nginx> {
        let config = dir.join("nginx.conf");
        let pid_file = dir.join("nginx.pid");
        fs::write(
            &config,
            format!(
                "daemon on;\n\
                 master_process on;\n\
                 worker_processes 1;\n\
                 pid {pid};\n\
                 error_log {dir}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n\
                 \x20   access_log off;\n\
                 \x20   keepalive_timeout 300s;\n\
                 \x20   keepalive_requests 1000000;\n\
                 \x20   server {{\n\
                 \x20       listen {addr};\n\
                 \x20       location / {{ return 200 \"served by pid $pid\\n\"; }}\n\
                 \x20   }}\n\
                 }}\n",
                pid = pid_file.display(),
                dir = dir.display(),
            ),
        )?;
        // The upgrade starts the binary the master was started as, by
        // that path: an absolute one.
        let status = Command::new(activation::find_program("nginx")?)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("nginx: {status}")));
        }
        let mut nginx = Nginx {
            pid_file,
            master: 0,
        };
        settle("nginx's pid file", || nginx.read_pid().is_some())?;
        nginx.master = nginx.read_pid().expect("settled");
        if let Err(e) = wait_until_answers(addr) {
            nginx.stop();
            return Err(e);
        }
        Ok(nginx)
    }

    fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }
}

impl Server for Nginx {
    fn restart(&mut self) -> io::Result<()> {
        let old = self.master;
        signal(old, Signal::USR2)?;
        let mut next = None;
        settle("nginx's new master and its worker", || {
            next = self.read_pid().filter(|&pid| pid != old);
            next.is_some_and(|pid| !children_of(pid).is_empty())
        })?;
        let next = next.expect("settled");
        signal(old, Signal::WINCH)?;
        // The new master is the old one's child too.
        settle("the old workers' exit", || {
            children_of(old).iter().all(|&pid| pid == next)
        })?;
        signal(old, Signal::QUIT)?;
        self.master = next;
        Ok(())
    }

    fn stop(&mut self) {
        if self.master != 0 {
            stop_all(&[self.master], Signal::QUIT);
        }
    }
}
