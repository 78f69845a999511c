//! Adopting the sockets a program is started with, on Windows: by the
//! protocol that systemfd, watchexec's `--socket` and the listenfd crate
//! share there, since Windows has no inherited fds 3, 4, ….
//!
//! The starting process listens on a loopback TCP address and gives it to
//! the program in `SYSTEMFD_SOCKET_SERVER`, with a random secret in
//! `SYSTEMFD_SOCKET_SECRET`. [`ListenFds::take`] connects, sends the
//! secret and this process's pid, and receives one `WSAPROTOCOL_INFOW`
//! per socket, which `WSASocketW` turns into this process's own socket.
//! The protocol carries no names: io-fdpass's [`Command`] also sets
//! `LISTEN_FDS` (how many sockets come, so that an answer cut short or a
//! refusal is an error rather than fewer sockets) and `LISTEN_FDNAMES`
//! (their names, as on Unix), which other speakers of the protocol
//! ignore. So a program started by systemfd gets its sockets unnamed
//! (`"unknown"`), and a program using listenfd gets the sockets of a
//! [`Command`].
//!
//! [`Command`] is the starting side: it runs a program with sockets, and
//! serves them to it alone: the request must carry the secret, name the
//! program's pid, and come from that pid where Windows can tell who is at
//! the other end of a loopback connection (`GetExtendedTcpTable`). What
//! Windows lacks, the Unix API's `exec`, `arg0`, `process_group`,
//! `find_program` and `room_for`, is not here; a program starts as
//! [`std::process::Command`] starts it.
//!
//! # The environment
//!
//! Unlike on Unix, [`ListenFds::take`] removes `SYSTEMFD_SOCKET_SERVER`,
//! `SYSTEMFD_SOCKET_SECRET`, `LISTEN_FDS` and `LISTEN_FDNAMES` from this
//! process's environment, as listenfd does: Windows has no `LISTEN_PID`
//! (the pid is known only once the program runs), so a child of this
//! process would otherwise ask for sockets meant for this one. Changing
//! the environment is sound on Windows, where the system serialises it
//! (see [`std::env::remove_var`]).
//!
//! # Examples
//!
//! ```no_run
//! use io_fdpass::activation::ListenFds;
//!
//! let mut fds = ListenFds::take()?;
//! let listener = match fds.index_of("http") {
//!     Some(i) => fds.take_tcp_listener(i)?,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! # drop(listener);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::{AsSocket, OwnedSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

#[path = "windows_command.rs"]
mod command;
pub(crate) mod systemfd;

pub use self::command::{Child, Command};
use self::systemfd::{malformed, number, Ask, Request, Secret};

/// The variables of the handover, which [`ListenFds::take`] removes and
/// [`Command`] never passes on from this process's environment.
pub(crate) const VARIABLES: [&str; 4] = [
    systemfd::SERVER,
    systemfd::SECRET,
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// How long [`ListenFds::take`] waits for the handover server: to
/// connect, and for the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server of the handover or of readiness waits for Windows to
/// name a client's process before it takes the client's word.
pub(crate) const PEER_LOOKUP: Duration = Duration::from_secs(3);

/// Whether [`ListenFds::take`] has been called in this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sockets a program was started with, owned, with their names.
///
/// Each socket is taken out once, by index: raw with
/// [`take_socket`](ListenFds::take_socket), or checked and typed with
/// [`take_tcp_listener`](ListenFds::take_tcp_listener) or
/// [`take_udp_socket`](ListenFds::take_udp_socket). The sockets not taken
/// are closed when this is dropped.
#[derive(Debug, Default)]
pub struct ListenFds {
    /// The sockets, by index; `None` once taken.
    sockets: Vec<Option<OwnedSocket>>,
    /// The name of each; empty where the starter gave no names.
    names: Vec<String>,
}

/// Where the handover server is, as the variables say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Server {
    pub(crate) address: SocketAddr,
    pub(crate) secret: Secret,
}

/// What the variables say: the server, and the count and names of the
/// sockets where io-fdpass started this process.
struct Handover {
    server: Server,
    count: Option<usize>,
    names: Option<String>,
}

/// Reads the handover's variables by `var`: `Ok(None)` without
/// `SYSTEMFD_SOCKET_SERVER`.
fn handover(var: impl Fn(&str) -> Option<String>) -> io::Result<Option<Handover>> {
    let Some(address) = var(systemfd::SERVER) else {
        return Ok(None);
    };
    let server = read_server(
        (systemfd::SERVER, &address),
        (systemfd::SECRET, var(systemfd::SECRET)),
    )?;
    let count = match var("LISTEN_FDS") {
        Some(count) => match number::<usize>("LISTEN_FDS", &count)? {
            n if n <= systemfd::MAX_SOCKETS => Some(n),
            _ => return Err(malformed("LISTEN_FDS", &count, "too many sockets")),
        },
        None => None,
    };
    Ok(Some(Handover {
        server,
        count,
        names: var("LISTEN_FDNAMES"),
    }))
}

/// A server's address and its secret, from the variables (name, value)
/// that give them.
pub(crate) fn read_server(
    (address_var, address): (&str, &str),
    (secret_var, secret): (&str, Option<String>),
) -> io::Result<Server> {
    let address = match address.parse::<SocketAddr>() {
        Ok(address) if address.ip().is_loopback() => address,
        Ok(_) => return Err(malformed(address_var, address, "not a loopback address")),
        Err(_) => return Err(malformed(address_var, address, "not an address")),
    };
    let secret = secret.ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("{address_var} is set but {secret_var} is not"),
        )
    })?;
    let secret =
        Secret::parse(&secret).ok_or_else(|| malformed(secret_var, &secret, "not a UUID"))?;
    Ok(Server { address, secret })
}

/// Reads the variables of this process once, and removes them.
fn take_variables() -> io::Result<Option<Handover>> {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let read = handover(var);
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    read
}

impl Server {
    /// Sends `ask` as this process to the server, in the line form to a
    /// server of io-fdpass's (`line`, see [`systemfd`]), and reads the
    /// whole answer, all within [`TIMEOUT`].
    pub(crate) fn ask(&self, ask: Ask, line: bool, most: usize) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + TIMEOUT;
        let what = |e: io::Error, step: &str| {
            let kind = match e.kind() {
                ErrorKind::WouldBlock => ErrorKind::TimedOut,
                kind => kind,
            };
            io::Error::new(
                kind,
                format!("the handover server at {}: {step}: {e}", self.address),
            )
        };
        let mut stream = TcpStream::connect_timeout(&self.address, TIMEOUT)
            .map_err(|e| what(e, "cannot connect"))?;
        let request = Request {
            secret: self.secret,
            pid: sys::current_pid(),
            ask,
        };
        stream
            .set_write_timeout(Some(TIMEOUT))
            .and_then(|()| stream.write_all(request.text(line).as_bytes()))
            .and_then(|()| {
                if line {
                    Ok(())
                } else {
                    stream.shutdown(Shutdown::Write)
                }
            })
            .map_err(|e| what(e, "cannot send the request"))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(what(
                    io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no whole answer within {TIMEOUT:?}"),
                    ),
                    "waiting for the answer",
                ));
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| what(e, "waiting for the answer"))?;
            match stream.read(&mut buf) {
                Ok(0) => return Ok(answer),
                Ok(n) if answer.len() + n > most => {
                    return Err(what(
                        io::Error::new(ErrorKind::InvalidData, format!("more than {most} bytes")),
                        "reading the answer",
                    ))
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(what(e, "reading the answer")),
            }
        }
    }
}

impl ListenFds {
    /// Takes the sockets this process was started with, by the handover
    /// protocol (see the [module documentation](self)); an empty set if it
    /// was started without any (`SYSTEMFD_SOCKET_SERVER` unset).
    ///
    /// Only the first call in a process looks: later calls return an
    /// empty set. The variables are removed from the environment either
    /// way. Every wait is bounded by [`TIMEOUT`]. The sockets are not
    /// inheritable.
    ///
    /// # Errors
    ///
    /// Whatever the error, no socket of the answer is left open.
    /// - [`ErrorKind::InvalidData`]: a variable is malformed (the message
    ///   names it), a socket cannot be opened from its record, or the
    ///   count differs from `LISTEN_FDS`;
    /// - [`ErrorKind::PermissionDenied`]: the server sent nothing where
    ///   `LISTEN_FDS` promised sockets: it refused this process;
    /// - [`ErrorKind::UnexpectedEof`]: the answer was cut short;
    /// - [`ErrorKind::TimedOut`], [`ErrorKind::ConnectionRefused`] and the
    ///   like: the server did not answer.
    pub fn take() -> io::Result<ListenFds> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(ListenFds::default());
        }
        let Some(handover) = take_variables()? else {
            return Ok(ListenFds::default());
        };
        let record = sys::PROTOCOL_INFO_LEN;
        let most = handover.count.unwrap_or(systemfd::MAX_SOCKETS) * record;
        // LISTEN_FDS beside says that the server is io-fdpass's.
        let line = handover.count.is_some();
        let answer = handover.server.ask(Ask::Sockets, line, most)?;
        let count = systemfd::records(answer.len(), record, handover.count)?;
        let names = systemfd::names(handover.names.as_deref(), count)?;
        let sockets = answer
            .chunks_exact(record)
            .map(|info| {
                let info = info
                    .try_into()
                    .map_err(|_| io::Error::from(ErrorKind::InvalidData))?;
                sys::socket_from_info(info).map(Some)
            })
            .collect::<io::Result<_>>()?;
        Ok(ListenFds { sockets, names })
    }

    /// How many sockets the set had, taken or not.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether the set had no sockets at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The name of socket `index`, from `LISTEN_FDNAMES`; `"unknown"` when
    /// the starter gave no names, as systemd says. `None` out of range.
    pub fn name(&self, index: usize) -> Option<&str> {
        if index >= self.sockets.len() {
            return None;
        }
        Some(self.names.get(index).map_or("unknown", String::as_str))
    }

    /// The index of the first socket called `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.sockets.len()).find(|&i| self.name(i) == Some(name))
    }

    /// Takes socket `index` out of the set, whatever it is. `None` when it
    /// is out of range or taken already.
    pub fn take_socket(&mut self, index: usize) -> Option<OwnedSocket> {
        self.sockets.get_mut(index)?.take()
    }

    /// Takes socket `index` as a TCP listener, checking that it is a
    /// listening IPv4 or IPv6 stream socket.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for an index out of range or taken already;
    /// [`ErrorKind::InvalidInput`], saying what the socket is, for any
    /// other kind of socket, which stays in the set.
    pub fn take_tcp_listener(&mut self, index: usize) -> io::Result<TcpListener> {
        self.take_as(
            index,
            "a listening TCP socket",
            sys::SocketKind::is_tcp_listener,
        )
        .map(TcpListener::from)
    }

    /// Takes the one listening TCP socket of the set, whatever its name:
    /// `Ok(None)` when there is none. For a program that serves on one
    /// port, whoever started it: systemfd names no socket, a previous
    /// generation ([`restart`](crate::restart)) names it as it was told.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when the set holds more than one
    /// listening TCP socket (the message names them): take one by name
    /// with [`index_of`](ListenFds::index_of) and
    /// [`take_tcp_listener`](ListenFds::take_tcp_listener). The error of
    /// `getsockopt` for a socket that cannot be examined.
    pub fn take_only_tcp_listener(&mut self) -> io::Result<Option<TcpListener>> {
        let mut found = Vec::new();
        for (i, socket) in self.sockets.iter().enumerate() {
            if let Some(socket) = socket {
                if sys::socket_kind(socket.as_socket())?.is_tcp_listener() {
                    found.push(i);
                }
            }
        }
        match found[..] {
            [] => Ok(None),
            [i] => self.take_tcp_listener(i).map(Some),
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .map(|&i| format!("{:?} (index {i})", self.name(i).unwrap_or("unknown")))
                    .collect();
                Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} inherited sockets are listening TCP sockets: {}; take one by its name",
                        found.len(),
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Takes socket `index` as a UDP socket, checking that it is an IPv4
    /// or IPv6 datagram socket.
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_udp_socket(&mut self, index: usize) -> io::Result<UdpSocket> {
        self.take_as(index, "a UDP socket", sys::SocketKind::is_udp)
            .map(UdpSocket::from)
    }

    /// Takes socket `index` if `accepts` says it is `wanted`.
    fn take_as(
        &mut self,
        index: usize,
        wanted: &str,
        accepts: impl Fn(&sys::SocketKind) -> bool,
    ) -> io::Result<OwnedSocket> {
        let name = self.name(index).unwrap_or("unknown").to_owned();
        let count = self.sockets.len();
        let Some(slot) = self.sockets.get_mut(index).filter(|s| s.is_some()) else {
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!("no socket {index} among the {count} inherited ones (out of range, or taken already)"),
            ));
        };
        let socket = slot.as_ref().map(AsSocket::as_socket);
        let kind = sys::socket_kind(socket.ok_or(ErrorKind::NotFound)?)?;
        if !accepts(&kind) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "inherited socket {index} ({name:?}) is {}, not {wanted}",
                    describe(kind)
                ),
            ));
        }
        slot.take()
            .ok_or_else(|| io::Error::from(ErrorKind::NotFound))
    }
}

/// What a socket is, in words.
fn describe(kind: sys::SocketKind) -> &'static str {
    if !kind.inet {
        "a socket of neither IPv4 nor IPv6"
    } else if kind.is_tcp_listener() {
        "a listening TCP socket"
    } else if kind.is_tcp() {
        "a TCP socket that is not listening"
    } else if kind.is_udp() {
        "a UDP socket"
    } else {
        "an IP socket of another type"
    }
}

/// How often [`read_request`] asks whether its server has stopped.
const STOP_TICK: Duration = Duration::from_millis(50);

/// Reads a request from a client of a handover or readiness server, by
/// `deadline`: up to its newline, or to the end of the stream; given up
/// within [`STOP_TICK`] once `stopped` says the server has stopped. `Err`
/// says why it is refused.
pub(crate) fn read_request(
    connection: &mut TcpStream,
    deadline: Instant,
    stopped: impl Fn() -> bool,
) -> Result<Request, String> {
    connection
        .set_nonblocking(false)
        .map_err(|e| format!("a connection that failed: {e}"))?;
    // A bound on each read, set once: a read follows a wait that found the
    // connection readable, so it returns at once.
    let _ = connection.set_read_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ));
    let mut request = Vec::new();
    let mut buf = [0u8; systemfd::MAX_REQUEST + 1];
    while !Request::is_whole_line(&request) {
        if stopped() {
            return Err("a client that sent no whole request before the server stopped".to_owned());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("a client that sent no whole request in time".to_owned());
        }
        // Waited for in ticks, so that a stopped server's reader ends
        // within one; the read itself then finds bytes or the end.
        let readable = sys::wait_for(connection.as_socket(), sys::READABLE, left.min(STOP_TICK))
            .map_err(|e| format!("a connection that failed: {e}"))?;
        if !readable {
            continue;
        }
        match connection.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if request.len() + n > systemfd::MAX_REQUEST => {
                return Err(format!(
                    "a request longer than {} bytes",
                    systemfd::MAX_REQUEST
                ))
            }
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("a connection that failed: {e}")),
        }
    }
    Request::parse(&request)
}

/// A connection to the non-blocking `listener`, if one comes `within`
/// that long (`WSAPoll`, then `accept`).
pub(crate) fn accept_within(
    listener: &TcpListener,
    within: Duration,
) -> io::Result<Option<TcpStream>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !sys::wait_for(listener.as_socket(), sys::READABLE, left)? {
            return Ok(None);
        }
        match listener.accept() {
            Ok((connection, _)) => return Ok(Some(connection)),
            // Taken by another thread or process meanwhile, or interrupted.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}
