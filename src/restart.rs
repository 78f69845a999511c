//! Restarting without downtime from inside the process: the running
//! generation of a server starts the next one with its listening sockets,
//! waits until the next one says it is ready, then stops accepting,
//! finishes what it holds and exits. The kernel keeps queueing connections
//! on the shared sockets throughout, so none is refused.
//!
//! The next generation gets the sockets by the socket-activation
//! convention (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), so it adopts
//! them with [`ListenFds::take`], and says it is ready with
//! [`notify::ready`] once it serves. If it does not within the timeout
//! ([`DEFAULT_TIMEOUT`], 30 seconds), or exits first, it is killed and
//! [`Restart::spawn`] returns an error: the old generation keeps serving
//! as if nothing had happened.
//!
//! Beyond listeners, a generation can hand the next:
//! - **state**, up to [`MAX_STATE`] bytes ([`Restart::state`], read once
//!   with [`take_state`]), through a file with no name, never the
//!   environment or the arguments, and checked on arrival;
//! - **established connections**, with the bytes each had read and not
//!   handled ([`Restart::connection`], taken with [`take_tcp_connection`]
//!   or [`take_unix_connection`]), so that its clients stay connected and
//!   lose nothing;
//! - **any fd** ([`Restart::fd`]).
//!
//! [`Restart`] owns duplicates of what it hands over, so it is `Send` and
//! `'static`; with the `tokio` feature, `Restart::spawn_async` waits for
//! the next generation without blocking the runtime.
//!
//! The next generation runs in a process group of its own, and "killed"
//! means the whole group: a worker it forked before the error is killed
//! with it, and holds the sockets no longer. For that to hold, neither it
//! nor its workers may leave the group (`setsid`, `setpgid`, a daemonizing
//! double fork into a new session) before it is ready. Once it is ready,
//! nothing of it is killed: it serves on its own.
//!
//! A restart may begin while an earlier generation still finishes its
//! work: each generation is a process of its own, and only one restart at
//! a time is under way *in one process* ([`ErrorKind::ResourceBusy`]).
//!
//! `examples/restart.rs` is a TCP server that restarts itself on SIGHUP;
//! `examples/keep_connections.rs` keeps its clients connected through its
//! restarts, each with its own count.
//!
//! # Under systemd
//!
//! When this process has a service manager (`$NOTIFY_SOCKET` is set, and
//! the socket is there), a restart is a reload of the service as systemd
//! sees it, and the next generation becomes the service's main process:
//!
//! 1. [`Restart::spawn`] and `Restart::spawn_async` say `RELOADING=1`
//!    with `MONOTONIC_USEC=` (what `Type=notify-reload` waits for after its
//!    SIGHUP);
//! 2. the next generation keeps systemd's `$NOTIFY_SOCKET`, so that it can
//!    speak to systemd itself (`STATUS=`, the fd store, and its own
//!    restarts, which work as this one does), and says its `READY=1` on a
//!    socket of this call's, named by [`notify::READY_SOCKET`];
//! 3. once it has, this process sends `MAINPID=` the next generation with
//!    `READY=1`, before the restart returns and so before this process
//!    exits: systemd follows the new main process, and never sees the
//!    service end. On any error it sends `READY=1` alone, and goes on as
//!    the main process.
//!
//! Each of these is a datagram sent without waiting, so `spawn_async`
//! never blocks the runtime on the service manager.
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
//! A tokio server that restarts on SIGHUP, serving on while the next
//! generation starts:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn serve() -> std::io::Result<()> {
//! use io_fdpass::activation::ListenFds;
//! use io_fdpass::restart::Restart;
//! use tokio::signal::unix::{signal, SignalKind};
//!
//! // Whatever started this, and whatever it named the socket.
//! let mut inherited = ListenFds::take()?;
//! let listener = match inherited.take_only_tcp_listener()? {
//!     Some(listener) => listener,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! listener.set_nonblocking(true)?;
//! let listener = tokio::net::TcpListener::from_std(listener)?;
//! io_fdpass::notify::ready()?; // tells the previous generation, if any, to go
//!
//! let mut hangup = signal(SignalKind::hangup())?;
//! loop {
//!     tokio::select! {
//!         accepted = listener.accept() => {
//!             let (connection, _) = accepted?;
//!             tokio::spawn(async move { drop(connection) /* serve it */ });
//!         }
//!         _ = hangup.recv() => {
//!             // Connections queue meanwhile; examples/restart.rs goes on
//!             // accepting while it waits.
//!             match Restart::new()?.fd("http", &listener)?.spawn_async().await {
//!                 Ok(next) => break println!("pid {} serves now", next.pid()),
//!                 Err(e) => eprintln!("still serving, the restart failed: {e}"),
//!             }
//!         }
//!     }
//! }
//! // Stop accepting, finish the connections in hand, and exit.
//! # Ok(())
//! # }
//! ```
//!
//! Without tokio, [`Restart::spawn`] blocks the calling thread until the
//! next generation is ready:
//!
//! ```no_run
//! use io_fdpass::activation::ListenFds;
//! use io_fdpass::restart::Restart;
//!
//! let mut inherited = ListenFds::take()?;
//! let listener = match inherited.take_only_tcp_listener()? {
//!     Some(listener) => listener,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! io_fdpass::notify::ready()?;
//!
//! // ... serve, and when it is time to restart:
//! match Restart::new()?.fd("http", &listener)?.spawn() {
//!     Ok(next) => println!("generation {} serves now", next.pid()),
//!     Err(e) => eprintln!("still serving, the restart failed: {e}"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::activation::ListenFds;
use crate::{notify, sys};

mod common;
mod generation;
mod handover;

use self::common::{Running, SLICE};
pub use self::common::{Successor, DEFAULT_TIMEOUT};

use self::generation::Starting;
use self::handover::Kind;

/// The name of the fd that carries the state handed over
/// ([`Restart::state`], [`take_state`]); no other fd may have it.
pub const STATE_NAME: &str = "io-fdpass.state";

/// The name of the fd that carries a connection's pending bytes, right
/// after the connection ([`Restart::connection`]); no other fd may have
/// it.
pub const PENDING_NAME: &str = "io-fdpass.pending";

/// The most bytes of state, and of pending bytes per connection, that go to
/// the next generation: 1 GiB.
pub const MAX_STATE: u64 = handover::MAX_BYTES;

/// The next generation to start, and what it gets: fds, live connections
/// and state.
///
/// It owns all it hands over ([`fd`](Restart::fd) keeps a duplicate of the
/// fd it is given; [`state`](Restart::state) and
/// [`connection`](Restart::connection) write their bytes into a file of
/// their own), so it is `Send` and `'static`: it can be built anywhere and
/// moved into a thread or a task. Dropping it closes what it holds.
#[derive(Debug)]
pub struct Restart {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    fds: Vec<(String, OwnedFd)>,
    timeout: Duration,
}

impl Restart {
    /// The next generation of this program: whatever binary is at its path
    /// now (so that a newer version installed there takes over), with the
    /// arguments this process was given.
    ///
    /// # Errors
    ///
    /// When the path of this program cannot be found
    /// ([`std::env::current_exe`]).
    pub fn new() -> io::Result<Restart> {
        let program = current_program()?;
        Ok(Restart::command(program, std::env::args_os().skip(1)))
    }

    /// `program` with `args` as the next generation. A program without a
    /// `/` is looked up in `PATH` ([`activation::find_program`](crate::activation::find_program)).
    pub fn command(
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Restart {
        Restart {
            program: program.as_ref().to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            fds: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Hands a duplicate of `fd` to the next generation under `name`: the
    /// fds are 3, 4, … in the order of these calls, and `LISTEN_FDNAMES`
    /// names them. The duplicate (`F_DUPFD_CLOEXEC`) is this `Restart`'s
    /// own; `fd` stays the caller's, to serve with until the next
    /// generation is ready.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that the name rules refuse
    /// ([`notify::check_name`]) or that is [`STATE_NAME`] or
    /// [`PENDING_NAME`], or more than [`MAX_FDS`](crate::MAX_FDS) fds in
    /// all; the error of `fcntl(2)` when the fd cannot be duplicated
    /// (`EMFILE`).
    pub fn fd(self, name: &str, fd: impl AsFd) -> io::Result<Restart> {
        notify::check_name(name)?;
        if name == STATE_NAME || name == PENDING_NAME {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{name:?} names the fds of the handover itself"),
            ));
        }
        let fd = fd.as_fd().try_clone_to_owned()?;
        self.push(name, fd)
    }

    /// Hands an established connection to the next generation under
    /// `name`, with `pending`: the bytes this generation has read from it
    /// and not handled (a request read in part, or a whole one not yet
    /// answered). The next generation takes both with
    /// [`take_tcp_connection`] or [`take_unix_connection`], and handles
    /// `pending` as if it had read them itself.
    ///
    /// The connection is an fd like any other ([`fd`](Restart::fd)); when
    /// `pending` is not empty, a second fd follows it, named
    /// [`PENDING_NAME`]: a file with no name (a memfd on Linux) that holds
    /// the bytes, checked as [`take_state`] checks the state. Stop reading
    /// from the connection before this call: a byte read after it would be
    /// lost to the next generation.
    ///
    /// # Errors
    ///
    /// As [`fd`](Restart::fd); [`ErrorKind::InvalidInput`] for more than
    /// [`MAX_STATE`] pending bytes; the error of making or writing the file.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Read;
    /// use io_fdpass::restart::Restart;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
    /// let (mut client, _) = listener.accept()?;
    /// let mut buf = [0; 1024];
    /// let n = client.read(&mut buf)?; // a request, read but not answered
    /// let next = Restart::new()?
    ///     .fd("http", &listener)?
    ///     .connection("client", &client, &buf[..n])?
    ///     .spawn()?;
    /// // The next generation answers; this one lets go of the client.
    /// drop(client);
    /// # drop(next);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connection(self, name: &str, stream: impl AsFd, pending: &[u8]) -> io::Result<Restart> {
        let pending = match pending {
            [] => None,
            bytes => Some(write_handover(Kind::Pending, bytes)?),
        };
        let mut restart = self.fd(name, stream)?;
        if let Some(file) = pending {
            restart = restart.push(PENDING_NAME, file)?;
        }
        Ok(restart)
    }

    /// Hands `bytes` to the next generation, which reads them once with
    /// [`take_state`]: up to [`MAX_STATE`] bytes (1 GiB) of whatever the
    /// program needs to go on where this generation stops (sessions,
    /// caches, counters).
    ///
    /// The bytes travel in a file that no path names (a memfd on Linux,
    /// Android and FreeBSD, an unlinked temporary file elsewhere), as one
    /// more fd, named [`STATE_NAME`], never in the environment or the
    /// arguments. A header goes before them, so that the next generation
    /// gets them whole or an error: the 8 bytes `IOFDPHO1`, then the kind
    /// (1 for a state, 2 for a connection's pending bytes), the length of
    /// the bytes and their checksum, each a little-endian `u64`. A second
    /// call replaces the first's bytes.
    ///
    /// The bytes are copied into the file now, in the calling thread.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for more than [`MAX_STATE`] bytes, or
    /// more than [`MAX_FDS`](crate::MAX_FDS) fds in all; the error of
    /// making or writing the file.
    pub fn state(mut self, bytes: &[u8]) -> io::Result<Restart> {
        let file = write_handover(Kind::State, bytes)?;
        match self.fds.iter_mut().find(|(name, _)| name == STATE_NAME) {
            Some((_, held)) => {
                *held = file;
                Ok(self)
            }
            None => self.push(STATE_NAME, file),
        }
    }

    /// Adds `fd` under `name`.
    fn push(mut self, name: &str, fd: OwnedFd) -> io::Result<Restart> {
        if self.fds.len() >= crate::MAX_FDS {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("at most {} fds go to the next generation", crate::MAX_FDS),
            ));
        }
        self.fds.push((name.to_owned(), fd));
        Ok(self)
    }

    /// Sets the variable `key` for the next generation, over this
    /// process's value: a flag, say, that tells it it is not the first.
    /// The variables of the socket-activation convention, `NOTIFY_SOCKET`
    /// and [`notify::READY_SOCKET`] are the restart's own:
    /// [`spawn`](Restart::spawn) refuses them.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Restart {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// How long to wait for the next generation to say it is ready
    /// ([`DEFAULT_TIMEOUT`], 30 seconds, unless set).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Restart {
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
    /// ([`activation::Command::process_group`](crate::activation::Command::process_group)),
    /// so that a terminal's Ctrl-C no longer reaches it. Every other
    /// variable is this process's; fds of this process that are not
    /// close-on-exec are inherited too, as by any `exec`. Its signal mask
    /// is cleared. Once this returns `Ok`, stop accepting, finish the work
    /// in hand and exit: the next generation serves.
    ///
    /// This blocks the calling thread for as long as the next generation
    /// takes to be ready; under tokio, use `spawn_async` (feature
    /// `tokio`).
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
    /// - [`ErrorKind::InvalidInput`]: a variable of [`env`](Restart::env)
    ///   is the restart's own, or holds a NUL byte;
    /// - [`ErrorKind::NotFound`] and the like: it could not be started;
    /// - under a service manager, the error of telling it `RELOADING=1`
    ///   (nothing was started) or `MAINPID=` (the next generation, ready,
    ///   was killed, since systemd would not follow it).
    pub fn spawn(self) -> io::Result<Successor> {
        let _running = Running::claim()?;
        let mut starting = Starting::start(&self)?;
        // The copies of the fds are the next generation's now.
        drop(self);
        loop {
            let left = starting.ended()?;
            if starting.wait_ready(left.min(SLICE))? {
                return Ok(Successor {
                    pid: starting.ready()?,
                });
            }
        }
    }

    /// [`spawn`](Restart::spawn) as a future, for a program under tokio:
    /// it never blocks the runtime's thread while it waits, and gives the
    /// same result.
    ///
    /// The `fork` and `exec` of the next generation, and the preparation
    /// before them, run on tokio's blocking threads once it is first
    /// polled, so that the runtime's threads serve on meanwhile; the wait
    /// for `READY=1` is a wait for the notify socket to be readable, in
    /// slices of 50 ms that look whether the next generation has exited.
    /// The next generation's killing and reaping, after an error, run on
    /// tokio's blocking threads too. Dropping the future before it is done kills the next
    /// generation, as an error would.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Restart::spawn).
    ///
    /// # Examples
    ///
    /// A tokio server that restarts on SIGHUP, and serves on while the next
    /// generation starts:
    ///
    /// ```no_run
    /// # async fn serve() -> std::io::Result<()> {
    /// use io_fdpass::activation::ListenFds;
    /// use io_fdpass::restart::Restart;
    /// use tokio::signal::unix::{signal, SignalKind};
    ///
    /// let mut inherited = ListenFds::take()?;
    /// let listener = match inherited.take_only_tcp_listener()? {
    ///     Some(listener) => listener,
    ///     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
    /// };
    /// listener.set_nonblocking(true)?;
    /// let listener = tokio::net::TcpListener::from_std(listener)?;
    /// io_fdpass::notify::ready()?; // the previous generation, if any, goes
    ///
    /// let mut hangup = signal(SignalKind::hangup())?;
    /// let mut restarting = std::pin::pin!(None);
    /// loop {
    ///     tokio::select! {
    ///         accepted = listener.accept() => {
    ///             let (connection, _) = accepted?;
    ///             tokio::spawn(async move { drop(connection) /* serve it */ });
    ///         }
    ///         _ = hangup.recv(), if restarting.is_none() => {
    ///             // `Restart` owns a copy of the listener: a future that
    ///             // borrows nothing.
    ///             let next = Restart::new()?.fd("http", &listener)?.spawn_async();
    ///             restarting.set(Some(next));
    ///         }
    ///         done = async { restarting.as_mut().as_pin_mut().unwrap().await },
    ///             if restarting.is_some() =>
    ///         {
    ///             restarting.set(None);
    ///             match done {
    ///                 Ok(next) => break println!("pid {} serves now", next.pid()),
    ///                 Err(e) => eprintln!("still serving, the restart failed: {e}"),
    ///             }
    ///         }
    ///     }
    /// }
    /// // Stop accepting, finish the connections in hand, and exit.
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn spawn_async(self) -> io::Result<Successor> {
        use tokio::io::unix::AsyncFd;
        use tokio::io::Interest;

        // The fork and the preparation before it take milliseconds; on a
        // blocking thread they hold up none of the requests this runtime
        // serves meanwhile. Dropped before it is done, the task still ends,
        // and dropping what it started kills and reaps it there; a next
        // generation being killed can no longer be ready, so the claim
        // goes with the future.
        let _running = Running::claim()?;
        let started = tokio::task::spawn_blocking(move || {
            let starting = Starting::start(&self);
            drop(self);
            starting
        });
        let starting = Reaped(Some(started.await.map_err(io::Error::other)??));
        let result = async {
            let starting = starting.0.as_ref().expect("taken only below");
            // SAFETY: the borrowed fd is open for as long as `socket`, which
            // the borrow cannot outlive, and always the same fd.
            let socket =
                unsafe { AsyncFd::register_with_interest(starting.socket(), Interest::READABLE) }?;
            loop {
                let left = starting.ended()?;
                if starting.take_ready()? {
                    return Ok(());
                }
                tokio::select! {
                    readable = socket.readable() => {
                        let mut guard = readable?;
                        // Clears the readiness unless a message came since.
                        if starting.take_ready()? {
                            return Ok(());
                        }
                        guard.clear_ready();
                    }
                    () = tokio::time::sleep(left.min(SLICE)) => {}
                }
            }
        }
        .await;
        starting.finish(result).await
    }
}

/// A next generation being started by [`Restart::spawn_async`]: killed
/// and reaped on tokio's blocking threads when it fails or the future is
/// dropped, so that the runtime's thread never waits for it.
#[cfg(feature = "tokio")]
struct Reaped(Option<Starting>);

#[cfg(feature = "tokio")]
impl Reaped {
    /// The successor once ready, or the error once the next generation is
    /// gone.
    async fn finish(mut self, result: io::Result<()>) -> io::Result<Successor> {
        let mut starting = self.0.take().expect("finished once");
        match result.and_then(|()| starting.ready()) {
            Ok(pid) => Ok(Successor { pid }),
            Err(e) => {
                // A panic of the drop, which kills and reaps, cannot be
                // told apart from its end; either way it is over.
                let _ = tokio::task::spawn_blocking(move || drop(starting)).await;
                Err(e)
            }
        }
    }
}

#[cfg(feature = "tokio")]
impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(starting) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(starting))),
                Err(_) => drop(starting),
            }
        }
    }
}

/// A file with no name that holds `bytes` of `kind` after their header.
fn write_handover(kind: Kind, bytes: &[u8]) -> io::Result<OwnedFd> {
    let header = handover::header(kind, bytes)?;
    let file = sys::anonymous_file(match kind {
        Kind::State => STATE_NAME,
        Kind::Pending => PENDING_NAME,
    })?;
    let mut file = std::fs::File::from(file);
    file.write_all(&header)?;
    file.write_all(bytes)?;
    Ok(file.into())
}

/// Reads a handover file of `kind` whole, from its start, and checks it.
fn read_handover(kind: Kind, file: OwnedFd) -> io::Result<Vec<u8>> {
    let file = std::fs::File::from(file);
    let size = file.metadata()?.len();
    let mut header = [0; handover::HEADER];
    let got = read_at_most(&file, &mut header, 0)?;
    let promise = handover::check_header(kind, &header[..got], size)?;
    // The size was checked against the header: no more than is there.
    let mut bytes = vec![0; promise.length as usize];
    let got = read_at_most(&file, &mut bytes, handover::HEADER as u64)?;
    bytes.truncate(got);
    promise.check(&bytes)?;
    Ok(bytes)
}

/// Fills `buf` from `offset` as far as the file goes; how much it read.
/// `pread`, which moves no offset that a copy of the fd elsewhere shares.
fn read_at_most(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Takes the state the previous generation handed over with
/// [`Restart::state`], once: `Ok(None)` when it handed none, or it has
/// been taken already. The fd that carried it is closed.
///
/// A next generation that never calls this leaks nothing: the fd is
/// close-on-exec from [`ListenFds::take`] on, and closed with the set.
///
/// # Errors
///
/// [`ErrorKind::InvalidData`] when the fd named [`STATE_NAME`] does not
/// hold a state as `Restart::state` writes it: cut short, added to,
/// damaged, or foreign (the message says which); the error of reading it.
/// The fd is closed either way.
///
/// # Examples
///
/// ```no_run
/// use io_fdpass::activation::ListenFds;
/// use io_fdpass::restart::{take_state, Restart};
///
/// let mut inherited = ListenFds::take()?;
/// let visits: u64 = match take_state(&mut inherited)? {
///     Some(bytes) => String::from_utf8_lossy(&bytes).parse().unwrap_or(0),
///     None => 0, // the first generation
/// };
/// // ... serve, counting visits; then, to restart:
/// let next = Restart::new()?.state(visits.to_string().as_bytes())?.spawn()?;
/// # drop(next);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn take_state(fds: &mut ListenFds) -> io::Result<Option<Vec<u8>>> {
    let Some(index) = fds.index_of(STATE_NAME) else {
        return Ok(None);
    };
    match fds.take_fd(index) {
        Some(file) => read_handover(Kind::State, file).map(Some),
        None => Ok(None),
    }
}

/// Takes fd `index` as a TCP connection handed over with
/// [`Restart::connection`], with the bytes it had read and not handled
/// (empty when there were none). The fd of those bytes, if any, is closed.
///
/// # Errors
///
/// As [`ListenFds::take_tcp_stream`], with the set unchanged;
/// [`ErrorKind::InvalidData`] when the pending bytes are cut short,
/// damaged or foreign, as for [`take_state`]: then the connection is
/// closed too, since what it had read is lost.
///
/// # Examples
///
/// ```no_run
/// use io_fdpass::activation::ListenFds;
/// use io_fdpass::restart::take_tcp_connection;
///
/// let mut inherited = ListenFds::take()?;
/// for i in 0..inherited.len() {
///     if inherited.name(i) == Some("client") {
///         let (stream, pending) = take_tcp_connection(&mut inherited, i)?;
///         // Handle `pending` first, then go on reading from `stream`.
///         # drop((stream, pending));
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn take_tcp_connection(fds: &mut ListenFds, index: usize) -> io::Result<(TcpStream, Vec<u8>)> {
    let stream = fds.take_tcp_stream(index)?;
    Ok((stream, take_pending(fds, index)?))
}

/// Takes fd `index` as a unix stream connection handed over with
/// [`Restart::connection`], with the bytes it had read and not handled.
///
/// # Errors
///
/// As [`take_tcp_connection`], for [`ListenFds::take_unix_stream`].
pub fn take_unix_connection(
    fds: &mut ListenFds,
    index: usize,
) -> io::Result<(UnixStream, Vec<u8>)> {
    let stream = fds.take_unix_stream(index)?;
    Ok((stream, take_pending(fds, index)?))
}

/// The pending bytes of the connection at `index`: those of the fd after
/// it, if it is named [`PENDING_NAME`].
fn take_pending(fds: &mut ListenFds, index: usize) -> io::Result<Vec<u8>> {
    if fds.name(index + 1) != Some(PENDING_NAME) {
        return Ok(Vec::new());
    }
    match fds.take_fd(index + 1) {
        Some(file) => read_handover(Kind::Pending, file),
        None => Ok(Vec::new()),
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
