//! Where a holder listens on Windows, and its connections: loopback TCP or
//! an `AF_UNIX` path, each behind one type, so that the client and the
//! server speak the protocol once over either.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, AtPath, FileId};

/// How many times a path whose entry keeps changing is looked at again.
const TRIES: usize = 4;

/// How long the check of a socket file found at the path waits for
/// whatever may listen there.
const PROBE: Duration = Duration::from_secs(1);

/// Where a holder listens on Windows: see [`address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Loopback TCP: `tcp:127.0.0.1:PORT` or `tcp:[::1]:PORT`.
    Tcp(SocketAddr),
    /// An `AF_UNIX` socket's path (Windows 10 1803 and later).
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The address of a holder on Windows: `tcp:IP:PORT` on loopback, or the
/// path of an `AF_UNIX` socket; where the process and user at the other
/// end of a connection can be learnt.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for TCP off loopback, a `tcp:` address
/// that is not `IP:PORT`, an `@name` (Windows has no abstract names), and
/// a path that does not fit in `sun_path` (107 bytes of UTF-8), each with
/// what to write instead.
pub fn address(text: &str) -> io::Result<Address> {
    let invalid = |why: String| io::Error::new(ErrorKind::InvalidInput, why);
    let Some(rest) = text.strip_prefix("tcp:") else {
        if text.starts_with('@') {
            return Err(invalid(format!(
                "{text:?}: abstract socket names ('@name') exist only on Linux: give a path, or tcp:127.0.0.1:PORT"
            )));
        }
        let path = PathBuf::from(text);
        sys::unix_address(&path)?;
        return Ok(Address::Unix(path));
    };
    let addr: SocketAddr = rest.parse().map_err(|_| {
        invalid(format!(
            "{text:?} is not tcp:IP:PORT, e.g. tcp:127.0.0.1:7000"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{text:?}: a holder listens on loopback only (127.0.0.1 or [::1]), where the process and user of each peer can be learnt"
        )));
    }
    Ok(Address::Tcp(addr))
}

/// A holder's listening socket on Windows: loopback TCP, or `AF_UNIX`.
///
/// Bound to a path, it behaves as `fdpass hold` does on Unix: a socket
/// file left there by a holder that has gone (nothing answers at it) is
/// replaced, and anything else at the path is refused. When the listener
/// is dropped it removes its socket file, if the file at the path is still
/// the one it made. See [`Listener::bind`] for what differs from Unix.
pub struct Listener(Kind);

enum Kind {
    Tcp(TcpListener),
    Unix {
        listener: sys::UnixListener,
        path: PathBuf,
        /// The socket file it made, seen right after `bind`.
        file: Option<FileId>,
    },
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Tcp(listener) => f.debug_tuple("Listener").field(listener).finish(),
            Kind::Unix { listener, path, .. } => f
                .debug_struct("Listener")
                .field("socket", listener)
                .field("path", path)
                .finish(),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener(Kind::Tcp(listener))
    }
}

impl Listener {
    /// Listens at `address`: binds loopback TCP, or an `AF_UNIX` socket at
    /// the path.
    ///
    /// At a path where something is already, a socket file is replaced if
    /// nothing answers a connection to it; a live socket, and anything
    /// that is not a socket file (a file, a directory, a link), is
    /// refused. The file is looked at and removed through one handle
    /// opened on the entry itself, so a link is never followed and what
    /// was checked is what goes. Unlike Unix's holder, the new socket is
    /// bound at the path itself, where Windows puts it with the
    /// directory's inherited permissions (there is no mode to set), and
    /// its identity is read just after: a file swapped in between would be
    /// taken for it, and removed at the end only if it is a socket file.
    /// A holder ended by `TerminateProcess` removes nothing; the next one
    /// replaces what it left. A live socket is told from a stale one by a
    /// connection to it: one that refuses every connection (a full
    /// backlog, if Windows refuses there rather than waits) would be taken
    /// for stale.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AddrInUse`] when the port is taken, or the path holds
    /// a live socket or something else; [`ErrorKind::Unsupported`] for a
    /// path where Windows has no `AF_UNIX` (before Windows 10 1803, and
    /// under Wine 8), saying to use `tcp:127.0.0.1:PORT`; the error of
    /// `bind` or `listen` otherwise. Each message names the address.
    pub fn bind(address: &Address) -> io::Result<Listener> {
        let kind = match address {
            Address::Tcp(addr) => TcpListener::bind(addr).map(Kind::Tcp),
            Address::Unix(path) => bind_unix(path),
        };
        kind.map(Listener)
            .map_err(|err| io::Error::new(err.kind(), format!("cannot listen at {address}: {err}")))
    }

    /// Where it listens: for TCP, the port it was given.
    ///
    /// # Errors
    ///
    /// The error of `getsockname` for TCP.
    pub fn local_address(&self) -> io::Result<Address> {
        match &self.0 {
            Kind::Tcp(listener) => listener.local_addr().map(Address::Tcp),
            Kind::Unix { path, .. } => Ok(Address::Unix(path.clone())),
        }
    }

    /// Ends this process when its console asks (Ctrl+C, Ctrl+Break, the
    /// console closing), as SIGINT and SIGTERM end `fdpass hold` on Unix:
    /// a listener at a path first removes its socket file, while it is
    /// still the one it made; the exit status is 0. For TCP it does
    /// nothing: Windows's own handling ends the process. Nothing runs when
    /// the process is ended by `TerminateProcess` (`taskkill /F`): the file
    /// stays, and the next holder at the path replaces it.
    ///
    /// # Errors
    ///
    /// The error of `SetConsoleCtrlHandler`.
    pub fn exit_on_console_event(&self) -> io::Result<()> {
        match &self.0 {
            Kind::Unix {
                path,
                file: Some(id),
                ..
            } => sys::remove_on_console_exit(path, *id),
            _ => Ok(()),
        }
    }

    /// The next connection.
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match &self.0 {
            Kind::Tcp(listener) => listener.accept().map(|(stream, _)| Stream::Tcp(stream)),
            Kind::Unix { listener, .. } => listener.accept().map(Stream::Unix),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Unix {
            path,
            file: Some(id),
            ..
        } = &self.0
        {
            let _ = sys::remove_socket_file(path, *id);
        }
    }
}

/// Binds an `AF_UNIX` listener at `path`, in place of a stale socket file
/// (see [`Listener::bind`]).
fn bind_unix(path: &Path) -> io::Result<Kind> {
    let shown = path.display();
    for _ in 0..TRIES {
        match sys::UnixListener::bind(path) {
            Ok(listener) => {
                let file = match sys::at_path(path) {
                    Ok(AtPath::Socket(id)) => Some(id),
                    _ => None,
                };
                return Ok(Kind::Unix {
                    listener,
                    path: path.to_owned(),
                    file,
                });
            }
            Err(err) if err.kind() == ErrorKind::AddrInUse => {}
            Err(err) => return Err(err),
        }
        let stale = match sys::at_path(path)? {
            // Gone meanwhile: bind again.
            AtPath::Nothing => continue,
            AtPath::Other => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("{shown} exists and is not a socket; refusing to replace it"),
                ))
            }
            AtPath::Socket(id) => id,
        };
        match sys::UnixStream::connect(path, PROBE) {
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!(
                        "another process is listening at {shown}; stop it or choose another path"
                    ),
                ))
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::NotFound
                ) => {}
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot tell whether something listens at {shown}: {err}"),
                ))
            }
        }
        // Not removed when it is no longer the stale file: looked at again.
        sys::remove_socket_file(path, stale)?;
    }
    Err(io::Error::new(
        ErrorKind::AddrInUse,
        format!("{shown} kept changing as the socket was put there: try again"),
    ))
}

/// A connection to or from a holder, over either transport.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(sys::UnixStream),
}

impl Stream {
    /// Connects to `address`, waiting at most `timeout`.
    pub(crate) fn connect(address: &Address, timeout: Duration) -> io::Result<Stream> {
        match address {
            Address::Tcp(addr) => TcpStream::connect_timeout(addr, timeout).map(Stream::Tcp),
            Address::Unix(path) => sys::UnixStream::connect(path, timeout).map(Stream::Unix),
        }
    }

    /// Bounds each read and write to `timeout`.
    pub(crate) fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))
            }
            Stream::Unix(stream) => {
                stream.set_read_timeout(timeout)?;
                stream.set_write_timeout(timeout)
            }
        }
    }

    /// The process at the other end where the transport says it: over
    /// `AF_UNIX` (`SIO_AF_UNIX_GETPEERPID`); `None` over TCP, where the
    /// peer proves its pid.
    pub(crate) fn known_peer_pid(&self) -> Option<io::Result<u32>> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Unix(stream) => Some(stream.peer_pid()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_address_is_loopback_tcp_or_a_path() {
        assert_eq!(
            address("tcp:127.0.0.1:7000").unwrap(),
            Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        let path = address("C:\\run\\fds.sock").unwrap();
        assert_eq!(path, Address::Unix(PathBuf::from("C:\\run\\fds.sock")));
        assert_eq!(path.to_string(), "C:\\run\\fds.sock");
        let long = "a".repeat(108);
        for bad in [
            "tcp:10.0.0.1:7000",
            "tcp:127.0.0.1",
            "@name",
            "",
            long.as_str(),
        ] {
            let err = address(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        }
    }
}
