//! Restarting without downtime from inside the process, on Windows: the
//! running generation of a server starts the next one with its listening
//! sockets, waits until the next one says it is ready, then stops
//! accepting, finishes what it holds and exits. Connections keep queueing
//! on the shared sockets throughout, so none is refused.
//!
//! The next generation gets the sockets by systemfd's protocol (see
//! [`activation`](crate::activation)): it adopts them with
//! [`ListenFds::take`](crate::activation::ListenFds::take), and says it is
//! ready with [`notify::ready`](crate::notify::ready) once it serves, over
//! a loopback connection checked by secret and by pid. If it does not
//! within the timeout, or exits first, it is ended and [`Restart::spawn`]
//! returns an error: the old generation keeps serving as if nothing had
//! happened. The next generation runs in a job object of its own from its
//! first instruction on, and the whole job is ended
//! (`TerminateJobObject`): a worker it started, which would hold the
//! listening sockets, ends with it. Once it is ready, the job's handle is
//! closed and the job limits nothing: the next generation and its workers
//! outlive the old one, and when it restarts in turn, its own next
//! generation gets a job nested in this one (nested jobs need Windows 8 or
//! later).
//!
//! Windows has no SIGHUP either: `examples/restart.rs` restarts when the
//! line `restart` arrives on its standard input.
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
use std::os::windows::io::{AsSocket, OwnedSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::activation::{Child, Command};
use crate::notify::Listener;
use crate::sys;

mod common;

use self::common::{Running, SLICE};
pub use self::common::{Successor, DEFAULT_TIMEOUT};

/// The next generation to start, and the sockets it gets.
///
/// It owns copies of the sockets it hands over, so it is `Send` and
/// `'static`: it can be built anywhere and moved into a thread or a task.
/// Dropping it closes them.
#[derive(Debug)]
pub struct Restart {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    sockets: Vec<(String, OwnedSocket)>,
    timeout: Duration,
}

impl Restart {
    /// The next generation of this program: whatever binary is at its path
    /// now, with the arguments this process was given.
    ///
    /// # Errors
    ///
    /// When the path of this program cannot be found
    /// ([`std::env::current_exe`]).
    pub fn new() -> io::Result<Restart> {
        let program = std::env::current_exe()?;
        Ok(Restart::command(program, std::env::args_os().skip(1)))
    }

    /// `program` with `args` as the next generation, found as
    /// [`std::process::Command`] finds it.
    pub fn command(
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Restart {
        Restart {
            program: program.as_ref().to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            sockets: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Hands a copy of `socket` to the next generation under `name`, in
    /// the order of these calls; `LISTEN_FDNAMES` names them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that the name rules refuse
    /// ([`check_name`](crate::notify::check_name)); the error of copying
    /// the socket.
    pub fn fd(mut self, name: &str, socket: impl AsSocket) -> io::Result<Restart> {
        crate::names::check_name(name)?;
        let copy = socket.as_socket().try_clone_to_owned()?;
        self.sockets.push((name.to_owned(), copy));
        Ok(self)
    }

    /// Sets the variable `key` for the next generation, over this
    /// process's value. The handover's and readiness's own are refused by
    /// [`spawn`](Restart::spawn).
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Restart {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// How long to wait for the next generation to say it is ready
    /// ([`DEFAULT_TIMEOUT`] unless set).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Restart {
        self.timeout = timeout;
        self
    }

    /// Starts the next generation and waits until it is ready.
    ///
    /// It gets the sockets by systemfd's protocol, with `LISTEN_FDS` and
    /// `LISTEN_FDNAMES` beside, and `NOTIFY_SOCKET` and
    /// `NOTIFY_SOCKET_SECRET` naming a loopback port of this call's own,
    /// where [`notify::ready`](crate::notify::ready) says `READY=1`. Only
    /// the next generation's pid is heard there. Once this returns `Ok`,
    /// stop accepting, finish the work in hand and exit: the next
    /// generation serves.
    ///
    /// This blocks the calling thread for as long as the next generation
    /// takes to be ready; under tokio, use
    /// [`spawn_async`](Restart::spawn_async).
    ///
    /// # Errors
    ///
    /// Whatever the error, nothing of the next generation runs: it was
    /// ended and waited for with every process it had started (all of
    /// them in the job object it was started in), and this process may go
    /// on serving. The job allows no breakaway: a process of the next
    /// generation cannot start one outside it (`CREATE_BREAKAWAY_FROM_JOB`
    /// is refused).
    /// - [`ErrorKind::ResourceBusy`]: another restart of this process is
    ///   under way;
    /// - [`ErrorKind::TimedOut`]: it was not ready in time;
    /// - [`ErrorKind::Other`]: it exited before it was ready (the message
    ///   gives its status, and why the handover of its sockets failed, if
    ///   it did);
    /// - [`ErrorKind::InvalidInput`]: a variable of [`env`](Restart::env)
    ///   is the restart's own;
    /// - [`ErrorKind::NotFound`] and the like: it could not be started;
    ///   [`ErrorKind::PermissionDenied`]: it could not be put in a job of
    ///   its own (this process is in a job that forbids nesting, or runs on
    ///   Windows 7, where a process is in one job at most).
    pub fn spawn(self) -> io::Result<Successor> {
        self.start()?.wait(&AtomicBool::new(false))
    }

    /// [`spawn`](Restart::spawn) as a future, for a program under tokio:
    /// the wait runs on tokio's blocking threads, never on the runtime's.
    /// Dropping the future before it is done ends the next generation, as
    /// an error would.
    ///
    /// The next generation is started (`CreateProcess`) on the calling
    /// thread when the future is first polled, as with `tokio::process`,
    /// so that on a current-thread runtime no task of this program runs
    /// meanwhile: a connection it has just accepted and not yet marked not
    /// inheritable cannot slip into the next generation.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Restart::spawn).
    #[cfg(feature = "tokio")]
    pub async fn spawn_async(self) -> io::Result<Successor> {
        /// Gives the restart up when the future is dropped.
        struct GiveUp(std::sync::Arc<AtomicBool>);
        impl Drop for GiveUp {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let given_up = GiveUp(std::sync::Arc::default());
        let flag = std::sync::Arc::clone(&given_up.0);
        let started = self.start()?;
        let result = tokio::task::spawn_blocking(move || started.wait(&flag)).await;
        drop(given_up);
        result.map_err(|e| io::Error::other(format!("the restart's task failed: {e}")))?
    }

    /// Starts the next generation, with a port to hear it is ready on.
    fn start(self) -> io::Result<Started> {
        let running = Running::claim()?;
        for (key, _) in &self.env {
            if OWN.iter().any(|name| key.eq_ignore_ascii_case(name)) {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is set by the restart, not by a variable",
                        key.to_string_lossy()
                    ),
                ));
            }
        }
        let notify = Listener::new()?;
        let job = sys::Job::new()?;
        let mut command = Command::new(&self.program)
            .args(&self.args)
            .timeout(self.timeout)
            .job(&job);
        for (key, value) in self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())) {
            command = command.env(key, value);
        }
        for (key, value) in notify.variables() {
            command = command.env(key, value);
        }
        for (name, socket) in &self.sockets {
            command = command.fd(name, socket)?;
        }
        // A start that fails once the program ran (its handover could not
        // be set up) leaves nothing it started behind either.
        let child = command.spawn().inspect_err(|_| {
            let _ = job.end_all(ENDING);
        })?;
        drop(command);
        let next = Next {
            child,
            job,
            ready: false,
        };
        // The copies are the next generation's now, or the server's.
        drop(self.sockets);
        Ok(Started {
            pid: next.child.id(),
            next,
            notify,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            _running: running,
        })
    }
}

/// A next generation started, not yet ready.
struct Started {
    pid: u32,
    next: Next,
    notify: Listener,
    deadline: Instant,
    timeout: Duration,
    _running: Running,
}

impl Started {
    /// Waits until it is ready, has exited, or the time is up, or the
    /// restart is `given_up`.
    fn wait(mut self, given_up: &AtomicBool) -> io::Result<Successor> {
        let (pid, next) = (self.pid, &mut self.next);
        let mut refusals = Vec::new();
        loop {
            if let Some(status) = next.child.try_wait()? {
                let handover = match next.child.wait_handover() {
                    Err(e) => format!(" ({e})"),
                    Ok(()) => String::new(),
                };
                return Err(io::Error::other(format!(
                    "the next generation (pid {pid}) exited before it was ready, {status}{handover}"
                )));
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || given_up.load(Ordering::SeqCst) {
                let why = if given_up.load(Ordering::SeqCst) {
                    "the restart was given up".to_owned()
                } else {
                    format!("it was not ready within {:?}", self.timeout)
                };
                drop(self);
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "the next generation (pid {pid}) was ended: {why}{}",
                        refused(&refusals)
                    ),
                ));
            }
            if self
                .notify
                .wait_ready(pid, left.min(SLICE), self.deadline, |why| {
                    refusals.push(why);
                })?
            {
                next.ready = true;
                // It has its sockets, normally: the handover server is
                // closing what it had open, and is waited for.
                next.child.join_settled_handover();
                return Ok(Successor { pid });
            }
        }
    }
}

/// The variables a restart sets itself.
const OWN: [&str; 2] = ["NOTIFY_SOCKET", "NOTIFY_SOCKET_SECRET"];

/// What was refused on the way, for a message.
fn refused(refusals: &[String]) -> String {
    match refusals {
        [] => String::new(),
        _ => format!("; refused meanwhile: {}", refusals.join("; ")),
    }
}

/// A next generation that is ended and waited for unless it is ready,
/// with every process in its job, so that no error path leaves any of it
/// running. Once it is ready, the job's handle is closed, which ends
/// nothing.
struct Next {
    child: Child,
    job: sys::Job,
    ready: bool,
}

/// How long dropping a [`Next`] that is not ready waits for the processes
/// of its job to be gone once they were ended.
const ENDING: Duration = Duration::from_secs(10);

impl Drop for Next {
    fn drop(&mut self) {
        if !self.ready {
            let _ = self.job.end_all(ENDING);
            // Ended with the job, unless ending the job failed.
            let _ = self.child.kill();
            let _ = self.child.wait();
            // The handover server sees the exit within a tick of its own,
            // and then ends: nothing of it is left open or running.
            let _ = self.child.wait_handover();
        }
    }
}
