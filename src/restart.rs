//! Restarting without downtime from inside the process: the running
//! generation of a server starts the next one with its listening sockets,
//! waits until the next one says it is ready, then stops accepting,
//! finishes what it holds and exits. The kernel keeps queueing connections
//! on the shared sockets throughout, so none is refused.
//!
//! The next generation gets the sockets by the socket-activation
//! convention (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), so it adopts
//! them with [`ListenFds::take`](crate::activation::ListenFds::take), and
//! says it is ready with [`notify::ready`] once it serves. If it does not within the
//! timeout, or exits first, it is killed and [`Restart::spawn`] returns an
//! error: the old generation keeps serving as if nothing had happened.
//!
//! The next generation runs in a process group of its own, and "killed"
//! means the whole group: a worker it forked before the error is killed
//! with it, and holds the sockets no longer. For that to hold, neither it
//! nor its workers may leave the group (`setsid`, `setpgid`, a daemonizing
//! double fork into a new session) before it is ready. Once it is ready,
//! nothing of it is killed: it serves on its own.
//!
//! `examples/restart.rs` is a TCP server that restarts itself on SIGHUP.
//!
//! # Under systemd
//!
//! When this process has a service manager (`$NOTIFY_SOCKET` is set, and
//! the socket is there), a restart is a reload of the service as systemd
//! sees it, and the next generation becomes the service's main process:
//!
//! 1. [`Restart::spawn`] says `RELOADING=1` with `MONOTONIC_USEC=` (what
//!    `Type=notify-reload` waits for after its SIGHUP);
//! 2. the next generation keeps systemd's `$NOTIFY_SOCKET`, so that it can
//!    speak to systemd itself (`STATUS=`, the fd store, and its own
//!    restarts, which work as this one does), and says its `READY=1` on a
//!    socket of this call's, named by [`notify::READY_SOCKET`];
//! 3. once it has, this process sends `MAINPID=` the next generation with
//!    `READY=1`, before `spawn` returns and so before this process exits:
//!    systemd follows the new main process, and never sees the service
//!    end. On any error it sends `READY=1` alone, and goes on as the main
//!    process.
//!
//! The unit needs `NotifyAccess=all` and the default `KillMode=` (or
//! `mixed`, never `process`), for the reasons [`notify::Handover`] gives:
//!
//! ```ini
//! [Service]
//! Type=notify
//! NotifyAccess=all
//! ExecStart=/usr/local/bin/my-server
//! ExecReload=/bin/kill -HUP $MAINPID
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use io_fdpass::activation::ListenFds;
//! use io_fdpass::notify;
//! use io_fdpass::restart::Restart;
//!
//! let mut inherited = ListenFds::take()?;
//! let listener = match inherited.index_of("http") {
//!     Some(i) => inherited.take_tcp_listener(i)?,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! notify::ready()?; // tells the previous generation, if any, to go
//!
//! // ... serve, and when it is time to restart:
//! match Restart::new()?.fd("http", &listener)?.spawn() {
//!     Ok(next) => println!("generation {} serves now", next.pid()),
//!     Err(e) => eprintln!("still serving, the restart failed: {e}"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{activation, notify, sys};

/// How long [`Restart::spawn`] waits for the next generation unless told
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a restart is under way in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The next generation to start, and the fds it gets.
#[derive(Debug)]
pub struct Restart<'a> {
    command: activation::Command<'a>,
    timeout: Duration,
}

/// The next generation, started and ready.
#[derive(Debug)]
pub struct Successor {
    pid: u32,
}

impl Successor {
    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl<'a> Restart<'a> {
    /// The next generation of this program: whatever binary is at its path
    /// now (so that a newer version installed there takes over), with the
    /// arguments this process was given.
    ///
    /// # Errors
    ///
    /// When the path of this program cannot be found
    /// ([`std::env::current_exe`]).
    pub fn new() -> io::Result<Restart<'a>> {
        let program = current_program()?;
        Ok(Restart::command(program, std::env::args_os().skip(1)))
    }

    /// `program` with `args` as the next generation. A program without a
    /// `/` is looked up in `PATH` ([`activation::find_program`]).
    pub fn command(
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Restart<'a> {
        Restart {
            command: activation::Command::new(program).args(args.into_iter().map(Into::into)),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Hands `fd` to the next generation under `name`: the fds are 3, 4, …
    /// in the order of these calls, and `LISTEN_FDNAMES` names them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that the name rules refuse
    /// ([`notify::check_name`]), or more than [`MAX_FDS`](crate::MAX_FDS)
    /// fds.
    pub fn fd(mut self, name: &str, fd: &'a impl AsFd) -> io::Result<Restart<'a>> {
        self.command = self.command.fd(name, fd)?;
        Ok(self)
    }

    /// How long to wait for the next generation to say it is ready
    /// ([`DEFAULT_TIMEOUT`] unless set).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Restart<'a> {
        self.timeout = timeout;
        self
    }

    /// Starts the next generation and waits until it is ready.
    ///
    /// It gets the fds as 3, 4, … with `LISTEN_FDS`, `LISTEN_PID` and
    /// `LISTEN_FDNAMES` set, and a socket of this call's own (a
    /// [`notify::Listener`]) on which it says `READY=1`
    /// ([`notify::ready`]): named by `NOTIFY_SOCKET`, or under a service
    /// manager by [`notify::READY_SOCKET`], its `NOTIFY_SOCKET` staying
    /// the service manager's (see [Under systemd](self#under-systemd)). It
    /// runs in a process group of its own
    /// ([`activation::Command::process_group`]), so that a terminal's
    /// Ctrl-C no longer reaches it. Every other variable is this process's;
    /// fds of this process that are not close-on-exec are inherited too, as
    /// by any `exec`. Its signal mask is cleared. Once this returns `Ok`,
    /// stop accepting, finish the work in hand and exit: the next
    /// generation serves.
    ///
    /// # Errors
    ///
    /// Whatever the error, nothing of the next generation is running: its
    /// whole process group, workers it forked among them, was killed
    /// (unless one of them left the group), and this process may go on
    /// serving.
    /// - [`ErrorKind::ResourceBusy`]: another restart of this process is
    ///   under way;
    /// - [`ErrorKind::TimedOut`]: it was not ready in time, and was
    ///   killed;
    /// - [`ErrorKind::Other`]: it exited before it was ready (the message
    ///   gives its status);
    /// - [`ErrorKind::NotFound`] and the like: it could not be started;
    /// - under a service manager, the error of telling it `RELOADING=1`
    ///   (nothing was started) or `MAINPID=` (the next generation, ready,
    ///   was killed, since systemd would not follow it).
    pub fn spawn(self) -> io::Result<Successor> {
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                ErrorKind::ResourceBusy,
                "a restart of this process is under way already",
            ));
        }
        let result = self.spawn_alone();
        RUNNING.store(false, Ordering::SeqCst);
        result
    }

    fn spawn_alone(self) -> io::Result<Successor> {
        let notify = notify::Listener::new()?;
        // Under a service manager: the next generation keeps its
        // `$NOTIFY_SOCKET` and says it is ready on `notify`; see
        // `notify::Handover`.
        let manager = notify::Handover::reloading()?;
        let command = match manager {
            Some(_) => self.command.env(notify::READY_SOCKET, notify.path()),
            None => self
                .command
                .env("NOTIFY_SOCKET", notify.path())
                .env(notify::READY_SOCKET, ""),
        };
        let result = command.process_group(0).spawn().and_then(|child| {
            let pid = child.id();
            wait_until_ready(&notify, pid, self.timeout)
                .and_then(|()| manager.as_ref().map_or(Ok(()), |m| m.hand_over(pid)))
                .map(|()| Successor { pid })
                .inspect_err(|_| sys::kill_group_and_reap(pid))
        });
        if let (Err(_), Some(manager)) = (&result, &manager) {
            manager.stay();
        }
        result
    }
}

/// Waits for `READY=1` from the generation `pid` on `notify`, until
/// `timeout`. As today, any process of this user that can reach the socket
/// may say it; [`notify::Notification::pid`] would tell who did.
fn wait_until_ready(notify: &notify::Listener, pid: u32, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = sys::exit_status(pid)? {
            return Err(io::Error::other(format!(
                "the next generation (pid {pid}) {status} before it was ready"
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the next generation (pid {pid}) was not ready within {timeout:?}; it was \
                     killed"
                ),
            ));
        }
        // Short slices, so that an exit is seen soon.
        if notify
            .wait_ready(Some(left.min(Duration::from_millis(50))))?
            .is_some()
        {
            return Ok(());
        }
    }
}

/// The path of this program, as the next generation should start it. On
/// Linux a binary that has been replaced since it started reads as
/// "PATH (deleted)"; its new version is at PATH.
fn current_program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.as_os_str().to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) if Path::new(path).exists() => Ok(PathBuf::from(path)),
        _ => Ok(exe),
    }
}
