//! Addresses on the command line, on Windows: a holder's (the path of an
//! `AF_UNIX` socket, or loopback TCP, `tcp:127.0.0.1:PORT`) and a
//! listening socket's (`tcp:HOST:PORT`). `unix:` listening addresses are
//! not supported there.

use std::fmt;
use std::net::TcpListener;
use std::str::FromStr;
use std::time::Duration;

use io_fdpass::holder::{Address, Listener};

use crate::fail::{self, Failure, Result};

/// How long a client waits for a peer that is not listening yet.
pub const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// Where a holder listens: an `AF_UNIX` path or loopback TCP, the rule of
/// `io_fdpass::holder::address`.
#[derive(Clone, Debug)]
pub struct SocketName(Address);

impl FromStr for SocketName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        io_fdpass::holder::address(s)
            .map(SocketName)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl SocketName {
    /// The address as the library takes it: the path, or `tcp:IP:PORT`.
    pub fn client_path(&self) -> String {
        self.to_string()
    }

    /// Listens at this address: 73 when it is taken (a port in use, a live
    /// socket or something else at the path), 71 where Windows has no
    /// `AF_UNIX` for a path.
    pub fn listen(&self) -> Result<Listener> {
        // The library's message names the address.
        Listener::bind(&self.0).map_err(|err| cannot_listen(&err, err.to_string()))
    }
}

/// The failure of a bind, saying `message`: 73 when the address is taken.
fn cannot_listen(err: &std::io::Error, message: String) -> Failure {
    let code = match err.kind() {
        std::io::ErrorKind::AddrInUse => fail::CANT_CREATE,
        _ => fail::OS,
    };
    Failure::new(code, message)
}

/// `tcp:HOST:PORT`.
#[derive(Clone, Debug)]
pub struct ListenAddr {
    host: String,
    port: u16,
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.starts_with("unix:") {
            return Err("unix: addresses are not supported on Windows: use tcp:HOST:PORT".into());
        }
        let rest = s
            .strip_prefix("tcp:")
            .ok_or("an address is tcp:HOST:PORT")?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or("a TCP address is tcp:HOST:PORT, e.g. tcp:127.0.0.1:8080")?;
        let port = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number (0 to 65535)"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("the host is missing: tcp:HOST:PORT, e.g. tcp:0.0.0.0:80".into());
        }
        Ok(ListenAddr {
            host: host.into(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp:[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp:{}:{}", self.host, self.port)
        }
    }
}

impl ListenAddr {
    /// The default name of its socket.
    #[expect(
        clippy::unused_self,
        reason = "the signature of Unix's, where the name depends on the address"
    )]
    pub fn kind(&self) -> &'static str {
        "tcp"
    }

    /// Binds and listens.
    pub fn listen(&self) -> Result<TcpListener> {
        TcpListener::bind((self.host.as_str(), self.port))
            .map_err(|err| cannot_listen(&err, format!("cannot listen at {self}: {err}")))
    }
}

/// What `adopt` would take: parsed as on Unix, so that the command line
/// reads the same, and refused when run.
#[derive(Clone, Debug)]
pub struct What;

impl FromStr for What {
    type Err = String;

    fn from_str(_: &str) -> std::result::Result<Self, String> {
        Ok(What)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_addresses_are_loopback_tcp_or_paths() {
        for good in ["tcp:127.0.0.1:7000", "C:\\run\\fds.sock", "fds.sock"] {
            let name: SocketName = good.parse().unwrap();
            assert_eq!(name.to_string(), good);
            assert_eq!(name.client_path(), good);
        }
        for bad in ["tcp:10.0.0.1:7000", "tcp:127.0.0.1", "@name", ""] {
            assert!(bad.parse::<SocketName>().is_err(), "{bad:?}");
        }
        let err = "a".repeat(108).parse::<SocketName>().unwrap_err();
        assert!(err.contains("at most 107"), "{err}");
    }

    #[test]
    fn listen_addresses_are_tcp() {
        let addr: ListenAddr = "tcp:[::1]:0".parse().unwrap();
        assert_eq!(addr.to_string(), "tcp:[::1]:0");
        let err = "unix:/a".parse::<ListenAddr>().unwrap_err();
        assert!(err.contains("not supported on Windows"), "{err}");
    }
}
