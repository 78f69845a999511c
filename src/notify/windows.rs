//! Saying "ready" on Windows, which has no systemd and no unix datagram
//! socket to say it on: the waiting process listens on a loopback TCP
//! port, named in `NOTIFY_SOCKET` as `tcp:127.0.0.1:PORT`, with a random
//! secret in `NOTIFY_SOCKET_SECRET`. [`ready`] connects and sends
//! `SECRET|PID|READY=1` and a newline (the request form of the socket
//! handover, see [`activation`](crate::activation)), and keeps the
//! connection whole until the answer; the waiting side checks the secret,
//! that the pid is the one it waits for, and that the connection comes
//! from that pid where Windows can tell (`GetExtendedTcpTable`), and
//! answers `1`.
//!
//! This is how the next generation of a server started by
//! [`Restart::spawn`](crate::restart::Restart::spawn) says that it serves.
//!
//! # Examples
//!
//! ```no_run
//! // Once the sockets are taken and served:
//! io_fdpass::notify::ready()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::AsSocket;
use std::time::{Duration, Instant};

use crate::activation::systemfd::{self, Ask, Secret};
use crate::activation::{accept_within, read_request, read_server, Server, PEER_LOOKUP};
use crate::sys;

pub use crate::names::{check_name, MAX_NAME};

/// The variable that names where to say it.
const SOCKET: &str = "NOTIFY_SOCKET";
/// The variable that gives the secret.
const SECRET: &str = "NOTIFY_SOCKET_SECRET";

/// The answer to a readiness message that was taken.
const TAKEN: &[u8] = b"1";

/// How long one connection to a [`Listener`] may take to say what it
/// has to say.
const PER_CONNECTION: Duration = Duration::from_secs(5);

/// `READY=1`: tells the process waiting for this one (see the [module
/// documentation](self)) that it is ready. `Ok(false)`, with nothing
/// sent, when `NOTIFY_SOCKET` is unset; every wait is bounded by
/// [`activation::TIMEOUT`](crate::activation::TIMEOUT).
///
/// # Errors
///
/// [`ErrorKind::InvalidData`] when a variable is malformed;
/// [`ErrorKind::PermissionDenied`] when the waiting side refused the
/// message (a wrong secret, or not the process it waits for); the error
/// of connecting or of the exchange otherwise.
pub fn ready() -> io::Result<bool> {
    let Some(address) = std::env::var_os(SOCKET).filter(|a| !a.is_empty()) else {
        return Ok(false);
    };
    let address = address.to_string_lossy();
    let Some(tcp) = address.strip_prefix("tcp:") else {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "the environment variable {SOCKET} is malformed (on Windows it is \
                 tcp:ADDRESS:PORT): {address:?}"
            ),
        ));
    };
    let secret = std::env::var_os(SECRET).map(|s| s.to_string_lossy().into_owned());
    let server = read_server((SOCKET, tcp), (SECRET, secret))?;
    match server.ask(Ask::Ready, true, TAKEN.len())?.as_slice() {
        TAKEN => Ok(true),
        _ => Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "the process waiting at {address} refused the readiness message (a wrong \
                 {SECRET}, or not the process it waits for)"
            ),
        )),
    }
}

/// The waiting side of [`ready`]: a loopback port and a secret, given to
/// the program in [`variables`](Listener::variables).
#[derive(Debug)]
pub(crate) struct Listener {
    listener: TcpListener,
    server: Server,
}

impl Listener {
    /// A listener on a loopback port of its own, with a random secret.
    pub(crate) fn new() -> io::Result<Listener> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        Ok(Listener {
            server: Server {
                address: listener.local_addr()?,
                secret: Secret::from_random(sys::random_bytes()?),
            },
            listener,
        })
    }

    /// The variables that tell a program where to say it is ready.
    pub(crate) fn variables(&self) -> [(&'static str, String); 2] {
        [
            (SOCKET, format!("tcp:{}", self.server.address)),
            (SECRET, self.server.secret.to_string()),
        ]
    }

    /// Waits up to `timeout` for a connection, and reads what it says by
    /// `last` at the latest (and within a few seconds): whether process
    /// `pid` said `READY=1`. Messages from anyone else, or of another form,
    /// are refused and waited past; `refused` hears why.
    pub(crate) fn wait_ready(
        &self,
        pid: u32,
        timeout: Duration,
        last: Instant,
        mut refused: impl FnMut(String),
    ) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(mut connection) = accept_within(&self.listener, left)? else {
                return Ok(false);
            };
            // Not the slice of the wait for a connection: a client on a
            // loaded machine may take longer than that to be read.
            let bound = last
                .saturating_duration_since(Instant::now())
                .min(PER_CONNECTION);
            match self.read(&mut connection, pid, bound) {
                Ok(()) => {
                    let _ = connection.write_all(TAKEN);
                    let _ = connection.shutdown(Shutdown::Both);
                    return Ok(true);
                }
                Err(why) => refused(why),
            }
        }
    }

    /// Reads one readiness message within `bound`: `Err` says why it is
    /// refused.
    fn read(&self, connection: &mut TcpStream, pid: u32, bound: Duration) -> Result<(), String> {
        let request = read_request(connection, Instant::now() + bound, || false)?;
        systemfd::judge(&request, &self.server.secret, pid, || {
            sys::peer_pid_within(connection.as_socket(), PEER_LOOKUP)
        })?;
        match request.ask {
            Ask::Ready => Ok(()),
            Ask::Sockets => Err("a request for sockets, where readiness is said".to_owned()),
        }
    }
}
