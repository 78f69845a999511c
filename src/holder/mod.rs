//! The client side of `fdpass hold`, the fd holder: keep fds under names
//! in a process of their own, so that they outlive the programs that use
//! them.
//!
//! A [`Client`] names the holder's socket and makes one request per call,
//! on a connection of its own. It trusts only a holder of the right user:
//! before it sends anything it checks the uid of the process at the socket
//! (`SO_PEERCRED`, `getpeereid` or `getpeerucred`), which must be this
//! process's own, root's, or one allowed with [`Client::holder_uid`] or
//! [`Client::trust`] (the rule of [`PeerTrust`]). An
//! abstract socket name (`@name`) has no file permissions and anyone may
//! take it first: this check is what protects it. Each call has one deadline for the whole exchange
//! ([`Client::timeout`]) and reads at most
//! [`Client::max_answer`] bytes of the answer.
//!
//! The wire format is in [`protocol`]; `fdpass hold` uses the same code for
//! its side of it.
//!
//! # Examples
//!
//! ```no_run
//! use io_fdpass::holder::Client;
//!
//! let holder = Client::new("/run/fds.sock");
//! let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//! holder.store("web", &listener)?;
//!
//! // Later, in the next generation of the server:
//! let listener = std::net::TcpListener::from(holder.fetch("web")?);
//! # Ok::<(), std::io::Error>(())
//! ```

pub(crate) mod codec;
mod common;
pub mod machine;
pub mod protocol;
#[cfg(feature = "tokio")]
mod server;
pub mod state_file;
mod system;

pub use self::common::{
    unix_now, DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_ANSWER, DEFAULT_MAX_NAMES, DEFAULT_TIMEOUT,
};
pub use self::machine::{Answer, Caller, Decision, Effect, Holder, Os, Reservation};
#[cfg(feature = "tokio")]
pub use self::server::{
    max_names_within, Hooks, Server, DEFAULT_MAX_CONNECTIONS, FD_RESERVE, MAX_PIDFD_WATCHES,
};
pub use self::system::System;

use std::ffi::OsString;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use self::codec::{parse_answer, GREETING};
use self::common::{checked_names, explained};
use self::protocol::{Entry, Lifetime, Request};
use crate::{sys, Deadline, PeerTrust};

/// A client of the holder at one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: OsString,
    timeout: Duration,
    startup_grace: Duration,
    max_answer: usize,
    trust: PeerTrust,
}

impl Client {
    /// A client of the holder listening at `socket`: a path, or on Linux
    /// `@name` for a name in the abstract namespace, as in `fdpass`.
    /// Nothing is connected until a call.
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().as_os_str().to_owned(),
            timeout: DEFAULT_TIMEOUT,
            startup_grace: Duration::ZERO,
            max_answer: DEFAULT_MAX_ANSWER,
            trust: PeerTrust::new(),
        }
    }

    /// Gives each call `timeout` in all, from connecting to the end of the
    /// answer ([`DEFAULT_TIMEOUT`] unless set); a call that runs out of it
    /// fails with [`ErrorKind::TimedOut`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Tries again, for up to `grace` (none unless set, and never past the
    /// timeout), while nothing listens at the socket: for a holder that
    /// was started a moment ago and may not be listening yet.
    #[must_use]
    pub fn startup_grace(mut self, grace: Duration) -> Client {
        self.startup_grace = grace;
        self
    }

    /// Reads at most `bytes` of an answer ([`DEFAULT_MAX_ANSWER`] unless
    /// set); a longer one fails with [`ErrorKind::InvalidData`].
    #[must_use]
    pub fn max_answer(mut self, bytes: usize) -> Client {
        self.max_answer = bytes;
        self
    }

    /// Also trusts a holder running as `uid`, besides this process's own
    /// uid and root.
    #[must_use]
    pub fn holder_uid(mut self, uid: u32) -> Client {
        self.trust = self.trust.allow_uid(uid);
        self
    }

    /// Trusts a holder that `trust` trusts ([`PeerTrust::new`], this
    /// process's uid and root, unless set), in place of any uid allowed so
    /// far.
    #[must_use]
    pub fn trust(mut self, trust: PeerTrust) -> Client {
        self.trust = trust;
        self
    }

    /// Has the holder keep a copy of `fd` under `name`, for as long as it
    /// runs, replacing what it held under that name.
    ///
    /// # Errors
    ///
    /// See [`Client::store_with_lifetime`].
    pub fn store(&self, name: &str, fd: impl AsFd) -> io::Result<()> {
        self.store_with_lifetime(name, fd, Lifetime::forever())
    }

    /// Has the holder keep a copy of `fd` under `name` for `lifetime`,
    /// replacing what it held under that name.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that breaks
    /// [the rules](crate::notify::check_name), with nothing sent; otherwise as
    /// every call:
    /// - [`ErrorKind::NotFound`] or [`ErrorKind::ConnectionRefused`] when
    ///   nothing listens at the socket;
    /// - [`ErrorKind::PermissionDenied`] when the holder runs as a user
    ///   this client does not trust (nothing is sent), or refuses this
    ///   one;
    /// - [`ErrorKind::TimedOut`] when the exchange takes longer than the
    ///   timeout;
    /// - [`ErrorKind::InvalidData`] for an answer that breaks the
    ///   protocol, or is too long;
    /// - and the holder's refusals, each as its
    ///   [kind](protocol::RefusalKind::error_kind): `NotFound` for a name
    ///   it does not hold (or, here, no process `until_exit`),
    ///   `QuotaExceeded` for a limit reached.
    pub fn store_with_lifetime(
        &self,
        name: &str,
        fd: impl AsFd,
        lifetime: Lifetime,
    ) -> io::Result<()> {
        crate::notify::check_name(name)?;
        let request = Request::Store {
            name: name.to_owned(),
            lifetime,
        };
        self.exchange(&request, Some(fd.as_fd()), 0).map(drop)
    }

    /// A copy of the fd held under `name`. It shares its open file
    /// description with the holder's: a file's offset and flags, such as
    /// `O_NONBLOCK`, are shared by every fetch of it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a name the holder does not hold, and
    /// otherwise as [`Client::store_with_lifetime`].
    pub fn fetch(&self, name: &str) -> io::Result<OwnedFd> {
        let mut fds = self.fetch_many(&[name])?;
        Ok(fds.remove(0))
    }

    /// Copies of the fds held under `names`, in the order of `names`: all
    /// of them, or none.
    ///
    /// # Errors
    ///
    /// As [`Client::fetch`]; [`ErrorKind::InvalidInput`] for no names or
    /// more than [`protocol::MAX_FETCH`].
    pub fn fetch_many(&self, names: &[&str]) -> io::Result<Vec<OwnedFd>> {
        let request = Request::Fetch {
            names: checked_names(names)?,
            take: false,
        };
        self.exchange(&request, None, names.len())
            .map(|(_, fds)| fds)
    }

    /// The fd held under `name`, which the holder stops holding once this
    /// process has it: a handover that happens once.
    ///
    /// # Errors
    ///
    /// As [`Client::take_many`].
    pub fn take(&self, name: &str) -> io::Result<OwnedFd> {
        let mut fds = self.take_many(&[name])?;
        Ok(fds.remove(0))
    }

    /// The fds held under `names`, which the holder stops holding once
    /// this process has them: a handover that happens once, all or none.
    /// It returns once the holder has committed the take
    /// ([`Client::reserve`], then [`Reserved::commit`]); after an error
    /// the holder still holds them, unless the error came after it
    /// committed (the answer to the commit lost, or too late).
    ///
    /// # Errors
    ///
    /// As [`Client::fetch_many`]; [`ErrorKind::QuotaExceeded`] when this
    /// process has no room for the fds (its open-file limit).
    pub fn take_many(&self, names: &[&str]) -> io::Result<Vec<OwnedFd>> {
        self.reserve(names)?.commit()
    }

    /// The first half of a take: copies of the fds held under `names`,
    /// which the holder keeps under their names until
    /// [`Reserved::commit`]. Put them where they go first: if that fails,
    /// drop the [`Reserved`], and the holder holds them as before. The
    /// timeout runs on until the commit.
    ///
    /// # Errors
    ///
    /// As [`Client::take_many`]; [`ErrorKind::NotFound`] too while another
    /// client is taking one of the names.
    pub fn reserve(&self, names: &[&str]) -> io::Result<Reserved> {
        let request = Request::Reserve {
            names: checked_names(names)?,
        };
        let deadline = Deadline::after(self.timeout);
        let stream = self.send_request(&request, None, false, deadline)?;
        let mut answer = Vec::new();
        let fds = self
            .read_answer(&stream, &mut answer, names.len(), false, deadline)
            .map_err(|e| explained(e, &self.display()))?;
        parse_answer(&String::from_utf8_lossy(&answer), "ok\n")?;
        Ok(Reserved {
            stream,
            deadline,
            fds,
            socket: self.display().into_owned(),
        })
    }

    /// The names the holder holds, in order.
    ///
    /// # Errors
    ///
    /// As [`Client::store_with_lifetime`].
    pub fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.entries()?.into_iter().map(|e| e.name).collect())
    }

    /// What the holder holds: for each name, what the fd is, who stored it
    /// and when, and when it will be dropped.
    ///
    /// # Errors
    ///
    /// As [`Client::store_with_lifetime`].
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let (body, _) = self.exchange(&Request::List, None, 0)?;
        body.lines().map(Entry::parse).collect()
    }

    /// Has the holder close the fd it holds under `name`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a name it does not hold, and otherwise
    /// as [`Client::store_with_lifetime`].
    pub fn drop(&self, name: &str) -> io::Result<()> {
        crate::notify::check_name(name)?;
        let request = Request::Drop {
            name: name.to_owned(),
        };
        self.exchange(&request, None, 0).map(drop)
    }

    /// Makes one request: connects, checks the holder, sends the request
    /// with `fd` attached, and returns the answer's text after `ok` with
    /// exactly `want_fds` fds.
    fn exchange(
        &self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
        want_fds: usize,
    ) -> io::Result<(String, Vec<OwnedFd>)> {
        let deadline = Deadline::after(self.timeout);
        let stream = self.send_request(request, fd, want_fds == 0, deadline)?;
        let mut answer = Vec::new();
        let fds = self
            .read_answer(&stream, &mut answer, want_fds, true, deadline)
            .map_err(|e| explained(e, &self.display()))?;
        let answer = String::from_utf8(answer).map_err(|_| {
            io::Error::new(ErrorKind::InvalidData, "the holder's answer is not text")
        })?;
        let body = parse_answer(&answer, "ok\n")?;
        Ok((body.to_owned(), fds))
    }

    /// Connects, checks the holder and its greeting, and sends `request`
    /// with `fd` attached; with `no_fds`, the connection refuses fds.
    fn send_request(
        &self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
        no_fds: bool,
        deadline: Deadline,
    ) -> io::Result<UnixStream> {
        let stream = self.connect(deadline)?;
        self.check_holder(&stream)?;
        if no_fds {
            sys::refuse_fds(stream.as_fd())?;
        }
        let mut greeting = Vec::new();
        let timed_out = |e: io::Error| explained(e, &self.display());
        read_line(&stream, &mut greeting, 1024, deadline).map_err(timed_out)?;
        parse_answer(&String::from_utf8_lossy(&greeting), GREETING)?;

        deadline.set_on(&stream).map_err(timed_out)?;
        let line = request.line();
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        let sent = crate::send_fds(&stream, line.as_bytes(), &fds).map_err(timed_out)?;
        deadline.set_on(&stream).map_err(timed_out)?;
        (&stream)
            .write_all(&line.as_bytes()[sent..])
            .map_err(timed_out)?;
        Ok(stream)
    }

    /// Reads the answer into `answer` (to the end of the stream, or with
    /// `!to_end` its first line), with the `want_fds` fds that come with
    /// its first byte: exactly that many, or an error.
    fn read_answer(
        &self,
        stream: &UnixStream,
        answer: &mut Vec<u8>,
        want_fds: usize,
        to_end: bool,
        deadline: Deadline,
    ) -> io::Result<Vec<OwnedFd>> {
        let mut first = [0; 512];
        let mut slots: Vec<Option<OwnedFd>> =
            std::iter::repeat_with(|| None).take(want_fds).collect();
        deadline.set_on(stream)?;
        let got = crate::recv_fds(stream, &mut first, &mut slots)?;
        let fds: Vec<OwnedFd> = slots.into_iter().flatten().collect();
        answer.extend_from_slice(&first[..got.bytes]);
        if got.bytes > 0 && to_end {
            read_to_end(stream, answer, self.max_answer, deadline)?;
        } else if got.bytes > 0 {
            read_line(stream, answer, 1024, deadline)?;
        }
        let refused = answer.starts_with(b"error ");
        if !refused && got.control_truncated && got.fds_discarded == 0 {
            return Err(io::Error::new(
                ErrorKind::QuotaExceeded,
                "this process is at its open-file limit (RLIMIT_NOFILE): the holder's fds could not be received, and were closed",
            ));
        }
        if !refused && (got.fds_discarded > 0 || got.control_truncated || fds.len() != want_fds) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "the holder sent {} fd(s), not the {want_fds} asked for; all were closed",
                    fds.len() + got.fds_discarded
                ),
            ));
        }
        Ok(fds)
    }

    /// Connects, trying again while the holder's backlog is full, and for
    /// the startup grace while nothing listens.
    fn connect(&self, deadline: Deadline) -> io::Result<UnixStream> {
        crate::connect_unix_retrying(&self.socket, deadline, self.startup_grace).map_err(|err| {
            match err.kind() {
                ErrorKind::TimedOut => io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "the holder at {} accepted no connection in time",
                        self.display()
                    ),
                ),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    io::Error::new(err.kind(), format!("{err}: is the holder running?"))
                }
                _ => err,
            }
        })
    }

    /// Trusts only a holder that [`Client::trust`] trusts.
    fn check_holder(&self, stream: &UnixStream) -> io::Result<()> {
        let peer = peer_ids(stream.as_fd())?;
        self.trust.check(&peer).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "the process at {} is not a holder this client trusts: {err}; nothing was sent",
                    self.display()
                ),
            )
        })
    }

    fn display(&self) -> std::borrow::Cow<'_, str> {
        self.socket.to_string_lossy()
    }
}

/// The fds of a take that the holder keeps until [`Reserved::commit`]
/// ([`Client::reserve`]). Dropped without a commit, the take does not
/// happen: the connection closes, and the holder holds the fds as before.
#[derive(Debug)]
#[must_use = "a take happens only once it is committed"]
pub struct Reserved {
    stream: UnixStream,
    deadline: Deadline,
    fds: Vec<OwnedFd>,
    socket: String,
}

impl Reserved {
    /// The fds, in the order of the names: to be put where they go before
    /// the commit.
    #[must_use]
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Tells the holder to stop holding the fds, and returns them once it
    /// has.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] past the client's timeout, counted from
    /// [`Client::reserve`]; [`ErrorKind::UnexpectedEof`] or
    /// [`ErrorKind::InvalidData`] when the holder did not confirm. The fds
    /// are closed. The holder holds them still if the commit did not reach
    /// it; if only its answer was lost, they are gone.
    pub fn commit(self) -> io::Result<Vec<OwnedFd>> {
        let explain = |e: io::Error| explained(e, &self.socket);
        self.deadline.set_on(&self.stream).map_err(explain)?;
        (&self.stream)
            .write_all(codec::COMMIT.as_bytes())
            .map_err(explain)?;
        let mut answer = Vec::new();
        read_line(&self.stream, &mut answer, 1024, self.deadline).map_err(explain)?;
        parse_answer(&String::from_utf8_lossy(&answer), "ok\n")?;
        Ok(self.fds)
    }
}

/// The ids of the peer of `socket`, without its pidfd, which neither side
/// of the holder needs: no fd is opened, so that a process at its
/// open-file limit can still tell who is at the other end.
pub(crate) fn peer_ids(socket: BorrowedFd<'_>) -> io::Result<crate::PeerCredentials> {
    let (uid, gid, pid) = sys::peer_credentials(socket)?;
    Ok(crate::PeerCredentials {
        uid,
        gid,
        pid,
        pidfd: None,
    })
}

/// Reads up to a newline, at most `max` bytes, into `buf`, one read at a
/// time: the holder sends nothing after its first line until the request.
fn read_line(
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Deadline,
) -> io::Result<()> {
    let mut chunk = [0; 256];
    while !buf.contains(&b'\n') {
        if buf.len() >= max {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "the peer's first line is too long for an fdpass holder's",
            ));
        }
        let n = deadline.read(stream, &mut chunk)?;
        if n == 0 && buf.is_empty() {
            return Err(ErrorKind::UnexpectedEof.into());
        } else if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Reads to the end of the stream, failing past `max` bytes in all.
fn read_to_end(
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Deadline,
) -> io::Result<()> {
    let mut chunk = [0; 16 * 1024];
    loop {
        let n = deadline.read(stream, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() + n > max {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("the holder's answer is longer than {max} bytes; it was cut off"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
