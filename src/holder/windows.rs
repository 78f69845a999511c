//! The client side of `fdpass hold`, the holder, on Windows: keep sockets
//! under names in a process of their own, so that they outlive the
//! programs that use them.
//!
//! The holder listens at an [`Address`]: the path of an `AF_UNIX` socket
//! where Windows has them (Windows 10 1803 and later), or loopback TCP,
//! `tcp:127.0.0.1:PORT`, where it does not (Windows before 1803, and Wine
//! 8, which has no `AF_UNIX`: there a path is refused with
//! [`ErrorKind::Unsupported`]). A [`Client`] makes one request per call, on
//! a connection of its own, and trusts only a holder of the right user:
//! before it sends its request it learns the holder's process id (below)
//! and the user that process runs as (its token's SID), which must be this
//! process's own, `LocalSystem`'s, or one allowed with [`Client::trust`]
//! (the rule of [`PeerTrust`]), as on Unix. Each call has one deadline for
//! the whole exchange ([`Client::timeout`]).
//!
//! How each side learns the other's process, on each transport:
//! - `AF_UNIX`: Windows says it, `WSAIoctl(SIO_AF_UNIX_GETPEERPID)` on the
//!   connection: the holder learns the pid of the client that connected,
//!   the client the pid of the holder that listens, which must be the pid
//!   the holder's greeting names. Nothing is proved.
//! - TCP: each side proves its pid to the other with a nonce (below):
//!   Windows's connection table (`GetExtendedTcpTable`) names the owner of
//!   a connection's end, but under Wine names none for an accepted socket,
//!   and there costs seconds a lookup on a busy machine.
//!
//! On both, the user is then read from the process's token (`OpenProcess`,
//! `OpenProcessToken`, `GetTokenInformation(TokenUser)`) and trusted by
//! [`PeerTrust`]'s rule; the holder checks before it reads a request, the
//! client before it sends one. A pid is learnt when the connection is
//! made and the token read just after: a peer that exited in between, its
//! pid taken by another process, would be taken for that process (over
//! TCP the proof rules this out: it is answered by the live process).
//!
//! The protocol is Unix's ([`protocol`]), with these changes:
//! - A socket travels as the `WSAPROTOCOL_INFOW` record that
//!   `WSADuplicateSocketW` fills for the process that receives it, in place
//!   of an `SCM_RIGHTS` fd. A store's record follows its request line, made
//!   for the holder's pid; the records of a fetch or take follow the `ok`
//!   line, made for the pid of the client that asked, one per name, in
//!   order.
//! - The greeting is followed by the line `pid PID`, the holder's process
//!   id. Over `AF_UNIX` the request follows. Over TCP each side proves its
//!   pid to the other first: the client sends `prove PID` (its own pid, a
//!   line) and the record of a UDP socket made for the holder's pid alone,
//!   to which it has sent a random nonce; the holder answers `proved HEX`
//!   (the nonce it read from that socket, a line) and a challenge of its
//!   own, made for the pid the client named; the client answers it in
//!   turn, once it trusts the holder's user, and sends its request. Only
//!   the process a record was made for can open it (`WSASocketW`).
//!
//! `AF_UNIX` is not tested here: the tests run under Wine 8, which lacks
//! it. There they check that a path is refused as above, and the tests
//! that need a real `AF_UNIX` say they were skipped.
//!
//! # Examples
//!
//! ```no_run
//! use io_fdpass::holder::Client;
//!
//! // Or at a path, where Windows has AF_UNIX: Client::new(r"C:\run\fds.sock")
//! let holder = Client::new("tcp:127.0.0.1:7000");
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
#[path = "windows_server.rs"]
mod server;
pub mod state_file;
#[path = "windows_transport.rs"]
mod transport;

pub use self::common::{
    unix_now, DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_ANSWER, DEFAULT_MAX_NAMES, DEFAULT_TIMEOUT,
};
pub use self::machine::{Answer, Caller, Decision, Effect, Holder, Os, Reservation};
pub use self::server::{Server, System, DEFAULT_MAX_CONNECTIONS};
pub use self::transport::{address, Address, Listener};

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::windows::io::{AsSocket, BorrowedSocket, OwnedSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use self::codec::{parse_answer, GREETING};
use self::common::{checked_names, explained};
use self::protocol::{Entry, Lifetime, Request};
use self::transport::Stream;
use crate::{sys, PeerTrust};

/// The size of one socket's record on the wire: a `WSAPROTOCOL_INFOW`.
pub const SOCKET_RECORD_LEN: usize = sys::PROTOCOL_INFO_LEN;

/// A client of the holder at one address.
#[derive(Debug, Clone)]
pub struct Client {
    socket: String,
    timeout: Duration,
    startup_grace: Duration,
    max_answer: usize,
    trust: PeerTrust,
}

impl Client {
    /// A client of the holder listening at `socket`: `tcp:127.0.0.1:PORT`
    /// or an `AF_UNIX` socket's path (see [`address`]), as in `fdpass`.
    /// Nothing is connected until a call, which fails on an address of
    /// another form.
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_string_lossy().into_owned(),
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
    /// timeout), while nothing listens at the address.
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

    /// Trusts a holder that `trust` trusts ([`PeerTrust::new`], this
    /// process's user and `LocalSystem`, unless set).
    #[must_use]
    pub fn trust(mut self, trust: PeerTrust) -> Client {
        self.trust = trust;
        self
    }

    /// Has the holder keep a copy of `socket` under `name`, for as long as
    /// it runs, replacing what it held under that name.
    ///
    /// # Errors
    ///
    /// See [`Client::store_with_lifetime`].
    pub fn store(&self, name: &str, socket: impl AsSocket) -> io::Result<()> {
        self.store_with_lifetime(name, socket, Lifetime::forever())
    }

    /// Has the holder keep a copy of `socket` under `name` for
    /// `lifetime`, replacing what it held under that name. The copy is
    /// made for the holder's process (`WSADuplicateSocketW`) once it is
    /// checked.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that breaks
    /// [the rules](crate::notify::check_name), with nothing sent; otherwise as
    /// every call:
    /// - [`ErrorKind::ConnectionRefused`] when nothing listens at the
    ///   address ([`ErrorKind::NotFound`] too for a path where there is
    ///   no socket);
    /// - [`ErrorKind::Unsupported`] for a path where Windows has no
    ///   `AF_UNIX` (before Windows 10 1803, and under Wine 8), saying to
    ///   use `tcp:127.0.0.1:PORT`;
    /// - [`ErrorKind::PermissionDenied`] when the holder runs as a user
    ///   this client does not trust (nothing is sent), or refuses this
    ///   one;
    /// - [`ErrorKind::TimedOut`] when the exchange takes longer than the
    ///   timeout;
    /// - [`ErrorKind::InvalidData`] for an answer that breaks the
    ///   protocol, or is too long;
    /// - and the holder's refusals, each as its
    ///   [kind](protocol::RefusalKind::error_kind).
    pub fn store_with_lifetime(
        &self,
        name: &str,
        socket: impl AsSocket,
        lifetime: Lifetime,
    ) -> io::Result<()> {
        crate::notify::check_name(name)?;
        let request = Request::Store {
            name: name.to_owned(),
            lifetime,
        };
        self.exchange(&request, Some(socket.as_socket()), 0)
            .map(drop)
    }

    /// A copy of the socket held under `name`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a name the holder does not hold, and
    /// otherwise as [`Client::store_with_lifetime`].
    pub fn fetch(&self, name: &str) -> io::Result<OwnedSocket> {
        let mut sockets = self.fetch_many(&[name])?;
        Ok(sockets.remove(0))
    }

    /// Copies of the sockets held under `names`, in the order of `names`:
    /// all of them, or none.
    ///
    /// # Errors
    ///
    /// As [`Client::fetch`]; [`ErrorKind::InvalidInput`] for no names or
    /// more than [`protocol::MAX_FETCH`].
    pub fn fetch_many(&self, names: &[&str]) -> io::Result<Vec<OwnedSocket>> {
        let request = Request::Fetch {
            names: checked_names(names)?,
            take: false,
        };
        self.exchange(&request, None, names.len())
            .map(|(_, sockets)| sockets)
    }

    /// The socket held under `name`, which the holder stops holding once
    /// this process has it.
    ///
    /// # Errors
    ///
    /// As [`Client::take_many`].
    pub fn take(&self, name: &str) -> io::Result<OwnedSocket> {
        let mut sockets = self.take_many(&[name])?;
        Ok(sockets.remove(0))
    }

    /// The sockets held under `names`, which the holder stops holding once
    /// this process has them, all or none ([`Client::reserve`], then
    /// [`Reserved::commit`]).
    ///
    /// # Errors
    ///
    /// As [`Client::fetch_many`].
    pub fn take_many(&self, names: &[&str]) -> io::Result<Vec<OwnedSocket>> {
        self.reserve(names)?.commit()
    }

    /// The first half of a take: copies of the sockets held under
    /// `names`, which the holder keeps under their names until
    /// [`Reserved::commit`]. Dropped without a commit, the holder holds
    /// them as before.
    ///
    /// # Errors
    ///
    /// As [`Client::take_many`]; [`ErrorKind::NotFound`] too while another
    /// client is taking one of the names.
    pub fn reserve(&self, names: &[&str]) -> io::Result<Reserved> {
        let request = Request::Reserve {
            names: checked_names(names)?,
        };
        let deadline = Instant::now() + self.timeout;
        let (mut stream, _) = self.send_request(&request, None, deadline)?;
        let mut answer = Vec::new();
        let sockets = read_answer(&mut stream, &mut answer, names.len(), None, deadline)
            .map_err(|e| explained(e, &self.socket))?;
        parse_answer(&String::from_utf8_lossy(&answer), "ok\n")?;
        Ok(Reserved {
            stream,
            deadline,
            sockets,
            socket: self.socket.clone(),
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

    /// What the holder holds: for each name, what the socket is, who stored
    /// it and when, and when it will be dropped.
    ///
    /// # Errors
    ///
    /// As [`Client::store_with_lifetime`].
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let (body, _) = self.exchange(&Request::List, None, 0)?;
        body.lines().map(Entry::parse).collect()
    }

    /// Has the holder close the socket it holds under `name`.
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
    /// with `socket`'s record, and returns the answer's text after `ok`
    /// with exactly `want` sockets.
    fn exchange(
        &self,
        request: &Request,
        socket: Option<BorrowedSocket<'_>>,
        want: usize,
    ) -> io::Result<(String, Vec<OwnedSocket>)> {
        let deadline = Instant::now() + self.timeout;
        let (mut stream, _) = self.send_request(request, socket, deadline)?;
        let mut answer = Vec::new();
        let sockets = read_answer(
            &mut stream,
            &mut answer,
            want,
            Some(self.max_answer),
            deadline,
        )
        .map_err(|e| explained(e, &self.socket))?;
        let answer = String::from_utf8(answer).map_err(|_| {
            io::Error::new(ErrorKind::InvalidData, "the holder's answer is not text")
        })?;
        let body = parse_answer(&answer, "ok\n")?;
        Ok((body.to_owned(), sockets))
    }

    /// Connects, checks the holder and its greeting, and sends `request`
    /// with the record of `socket` made for the holder's process; the
    /// connection and the holder's pid.
    fn send_request(
        &self,
        request: &Request,
        socket: Option<BorrowedSocket<'_>>,
        deadline: Instant,
    ) -> io::Result<(Stream, u32)> {
        let mut stream = self.connect(deadline)?;
        let explain = |e: io::Error| explained(e, &self.socket);
        let mut greeting = Vec::new();
        read_lines(&mut stream, &mut greeting, 2, 1024, deadline).map_err(explain)?;
        let greeting = String::from_utf8_lossy(&greeting);
        let rest = parse_answer(&greeting, GREETING)?;
        let claimed = rest
            .strip_prefix("pid ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|pid| pid.parse::<u32>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "the peer at {} is not an fdpass holder for Windows: it did not say its pid",
                        self.socket
                    ),
                )
            })?;
        let pid = self
            .check_holder(&mut stream, claimed, deadline)
            .map_err(explain)?;
        let mut bytes = request.line().into_bytes();
        if let Some(socket) = socket {
            bytes.extend_from_slice(&sys::duplicate_socket(socket, pid)?);
        }
        set_deadline(&stream, deadline).map_err(explain)?;
        stream.write_all(&bytes).map_err(explain)?;
        Ok((stream, pid))
    }

    /// Connects within the deadline, trying again for the startup grace
    /// while nothing listens.
    fn connect(&self, deadline: Instant) -> io::Result<Stream> {
        let address = address(&self.socket)?;
        let grace = Instant::now() + self.startup_grace;
        let timed_out = || {
            io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the holder at {} accepted no connection in time",
                    self.socket
                ),
            )
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let err = match Stream::connect(&address, left) {
                Ok(stream) => return Ok(stream),
                Err(err) => err,
            };
            match err.kind() {
                ErrorKind::ConnectionRefused | ErrorKind::NotFound if Instant::now() < grace => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                ErrorKind::ConnectionRefused | ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{}: {err}: is the holder running?", self.socket),
                    ))
                }
                ErrorKind::TimedOut => return Err(timed_out()),
                _ => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{}: {err}", self.socket),
                    ))
                }
            }
        }
    }

    /// Trusts only a holder that [`Client::trust`] trusts, in the process
    /// it `claimed`: over `AF_UNIX` the one Windows says listens there;
    /// over TCP one that proves it is that process, to which this process
    /// proves its own pid in turn. Its pid.
    fn check_holder(
        &self,
        stream: &mut Stream,
        claimed: u32,
        deadline: Instant,
    ) -> io::Result<u32> {
        let refused = |err: io::Error| {
            io::Error::new(
                err.kind(),
                format!(
                    "the process at {} is not a holder this client trusts: {err}; nothing was sent",
                    self.socket
                ),
            )
        };
        let proof = match stream.known_peer_pid() {
            Some(known) => {
                let known = known.map_err(refused)?;
                if known != claimed {
                    return Err(refused(io::Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "it says it is process {claimed}, and Windows says process {known} listens there"
                        ),
                    )));
                }
                None
            }
            None => Some(prove(stream, claimed, deadline).map_err(refused)?),
        };
        let peer = crate::PeerCredentials {
            user: sys::process_user(claimed).map_err(refused)?,
            pid: Some(claimed),
        };
        self.trust.check(&peer).map_err(refused)?;
        if let Some(proof) = proof {
            set_deadline(stream, deadline)?;
            stream.write_all(proof.as_bytes())?;
        }
        Ok(claimed)
    }
}

/// A challenge for process `pid` to prove it is that process: a UDP
/// socket, a random nonce sent to it, and the socket's record made for
/// `pid` alone. Only that process can open the record and read the nonce.
pub(crate) struct Challenge {
    _socket: UdpSocket,
    nonce: [u8; 16],
    pub(crate) record: [u8; SOCKET_RECORD_LEN],
}

impl Challenge {
    pub(crate) fn new(pid: u32) -> io::Result<Challenge> {
        let nonce: [u8; 16] = sys::random_bytes()?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.send_to(&nonce, socket.local_addr()?)?;
        let record = sys::duplicate_socket(socket.as_socket(), pid)?;
        Ok(Challenge {
            _socket: socket,
            nonce,
            record,
        })
    }

    /// Whether `line` is the answer: `proved HEX` and its newline.
    pub(crate) fn answered_by(&self, line: &[u8]) -> bool {
        line == format!("{PROVED}{}\n", hex(&self.nonce)).as_bytes()
    }
}

/// The answer to a challenge whose `record` was made for this process:
/// the line `proved HEX`, read from the socket it opens, within the
/// deadline.
pub(crate) fn answer(record: &[u8; SOCKET_RECORD_LEN], deadline: Instant) -> io::Result<String> {
    let socket = UdpSocket::from(sys::socket_from_info(record)?);
    let left = deadline.saturating_duration_since(Instant::now());
    socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut nonce = [0u8; 64];
    let got = socket.recv(&mut nonce)?;
    Ok(format!("{PROVED}{}\n", hex(&nonce[..got])))
}

/// Has the holder prove that it is process `holder`, and proves that this
/// is this process: sends `prove PID` and a challenge, checks the answer,
/// and answers the holder's challenge; the line of that answer, to go
/// before the request once the holder's user is checked.
fn prove(stream: &mut Stream, holder: u32, deadline: Instant) -> io::Result<String> {
    let challenge = Challenge::new(holder)?;
    let mut bytes = format!("{PROVE}{}\n", sys::current_pid()).into_bytes();
    bytes.extend_from_slice(&challenge.record);
    set_deadline(stream, deadline)?;
    stream.write_all(&bytes)?;
    let mut line = Vec::new();
    read_line(stream, &mut line, 1024, deadline)?;
    let end = line
        .iter()
        .position(|&b| b == b'\n')
        .map_or(line.len(), |i| i + 1);
    let mut record = line.split_off(end);
    if !challenge.answered_by(&line) {
        parse_answer(&String::from_utf8_lossy(&line), PROVED)?;
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!("it says it is process {holder}, and could not prove it"),
        ));
    }
    let had = record.len().min(SOCKET_RECORD_LEN);
    record.resize(SOCKET_RECORD_LEN, 0);
    read_exact(stream, &mut record[had..], deadline)?;
    let record: [u8; SOCKET_RECORD_LEN] = record
        .try_into()
        .map_err(|_| io::Error::from(ErrorKind::InvalidData))?;
    answer(&record, deadline)
}

/// What a client sends first, with its pid: `prove PID`, then a challenge
/// for the holder.
pub(crate) const PROVE: &str = "prove ";

/// The start of the answer to a challenge.
pub(crate) const PROVED: &str = "proved ";

/// Bytes in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sockets of a take that the holder keeps until [`Reserved::commit`]
/// ([`Client::reserve`]). Dropped without a commit, the take does not
/// happen: the connection closes, and the holder holds them as before.
#[derive(Debug)]
#[must_use = "a take happens only once it is committed"]
pub struct Reserved {
    stream: Stream,
    deadline: Instant,
    sockets: Vec<OwnedSocket>,
    socket: String,
}

impl Reserved {
    /// The sockets, in the order of the names.
    #[must_use]
    pub fn sockets(&self) -> &[OwnedSocket] {
        &self.sockets
    }

    /// Tells the holder to stop holding the sockets, and returns them once
    /// it has.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] past the client's timeout, counted from
    /// [`Client::reserve`]; [`ErrorKind::UnexpectedEof`] or
    /// [`ErrorKind::InvalidData`] when the holder did not confirm. The
    /// sockets are closed.
    pub fn commit(mut self) -> io::Result<Vec<OwnedSocket>> {
        let socket = self.socket.clone();
        let explain = |e: io::Error| explained(e, &socket);
        set_deadline(&self.stream, self.deadline).map_err(explain)?;
        self.stream
            .write_all(codec::COMMIT.as_bytes())
            .map_err(explain)?;
        let mut answer = Vec::new();
        read_line(&mut self.stream, &mut answer, 1024, self.deadline).map_err(explain)?;
        parse_answer(&String::from_utf8_lossy(&answer), "ok\n")?;
        Ok(self.sockets)
    }
}

/// Reads an answer: its first line into `answer`, then after `ok` the
/// `want` sockets' records, then with `to_end` (the most bytes) the rest
/// to the end of the stream.
fn read_answer(
    stream: &mut Stream,
    answer: &mut Vec<u8>,
    want: usize,
    to_end: Option<usize>,
    deadline: Instant,
) -> io::Result<Vec<OwnedSocket>> {
    read_line(stream, answer, 1024, deadline)?;
    let end = answer
        .iter()
        .position(|&b| b == b'\n')
        .map_or(answer.len(), |i| i + 1);
    let mut rest = answer.split_off(end);
    if answer.as_slice() != b"ok\n" {
        return Ok(Vec::new());
    }
    let mut sockets = Vec::with_capacity(want);
    for _ in 0..want {
        let mut record = [0u8; SOCKET_RECORD_LEN];
        let from_rest = rest.len().min(SOCKET_RECORD_LEN);
        record[..from_rest].copy_from_slice(&rest[..from_rest]);
        rest.drain(..from_rest);
        read_exact(stream, &mut record[from_rest..], deadline).map_err(|err| {
            if err.kind() == ErrorKind::UnexpectedEof {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "the holder sent {} socket(s), not the {want} asked for; all were closed",
                        sockets.len()
                    ),
                )
            } else {
                err
            }
        })?;
        sockets.push(sys::socket_from_info(&record)?);
    }
    answer.extend_from_slice(&rest);
    if let Some(max) = to_end {
        read_to_end(stream, answer, max, deadline)?;
    }
    Ok(sockets)
}

/// Sets the socket's timeouts to what is left until `deadline`.
fn set_deadline(stream: &Stream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    stream.set_timeouts(left)
}

/// One read within the deadline.
fn read_some(stream: &mut Stream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    set_deadline(stream, deadline)?;
    stream.read(buf)
}

/// Fills `buf` within the deadline.
fn read_exact(stream: &mut Stream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        match read_some(stream, buf, deadline)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// Reads up to a newline, at most `max` bytes, into `buf`: what follows
/// the newline in the last read stays in `buf` too.
fn read_line(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<()> {
    read_lines(stream, buf, 1, max, deadline)
}

/// Reads `lines` lines (or to the end of the stream), at most `max`
/// bytes, into `buf`.
#[expect(
    clippy::naive_bytecount,
    reason = "at most a few hundred bytes, counted without another crate"
)]
fn read_lines(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    lines: usize,
    max: usize,
    deadline: Instant,
) -> io::Result<()> {
    let mut chunk = [0; 256];
    while buf.iter().filter(|&&b| b == b'\n').count() < lines {
        if buf.len() >= max {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "the peer's first line is too long for an fdpass holder's",
            ));
        }
        let n = read_some(stream, &mut chunk[..(max - buf.len()).min(256)], deadline)?;
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
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<()> {
    let mut chunk = [0; 16 * 1024];
    loop {
        let n = read_some(stream, &mut chunk, deadline)?;
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
