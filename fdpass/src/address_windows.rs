//! Addresses on the command line, on Windows: a holder's (loopback TCP,
//! `tcp:127.0.0.1:PORT`) and a listening socket's (`tcp:HOST:PORT`).
//! `unix:` addresses and `AF_UNIX` holder paths are not supported there.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::time::Duration;

use crate::fail::{self, Failure, Result};

/// How long a client waits for a peer that is not listening yet.
pub const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// Where a holder listens: loopback TCP, the rule of
/// `io_fdpass::holder::address`.
#[derive(Clone, Debug)]
pub struct SocketName(SocketAddr);

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
        write!(f, "tcp:{}", self.0)
    }
}

impl SocketName {
    /// The address as the library takes it: `tcp:IP:PORT`.
    pub fn client_path(&self) -> String {
        self.to_string()
    }

    /// Listens at this address.
    pub fn listen(&self) -> Result<TcpListener> {
        TcpListener::bind(self.0).map_err(|err| cannot_listen(&self.to_string(), &err))
    }
}

/// The failure of a bind: 73 when the address is taken.
fn cannot_listen(addr: &str, err: &std::io::Error) -> Failure {
    let code = match err.kind() {
        std::io::ErrorKind::AddrInUse => fail::CANT_CREATE,
        _ => fail::OS,
    };
    Failure::new(code, format!("cannot listen at {addr}: {err}"))
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
    pub fn kind(&self) -> &'static str {
        "tcp"
    }

    /// Binds and listens.
    pub fn listen(&self) -> Result<TcpListener> {
        TcpListener::bind((self.host.as_str(), self.port))
            .map_err(|err| cannot_listen(&self.to_string(), &err))
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
    fn holder_addresses_are_loopback_tcp() {
        let name: SocketName = "tcp:127.0.0.1:7000".parse().unwrap();
        assert_eq!(name.to_string(), "tcp:127.0.0.1:7000");
        for bad in ["/tmp/a", "tcp:10.0.0.1:7000", "tcp:127.0.0.1", "@name", ""] {
            assert!(bad.parse::<SocketName>().is_err(), "{bad:?}");
        }
        let err = "C:\\fds".parse::<SocketName>().unwrap_err();
        assert!(err.contains("tcp:127.0.0.1:PORT"), "{err}");
    }

    #[test]
    fn listen_addresses_are_tcp() {
        let addr: ListenAddr = "tcp:[::1]:0".parse().unwrap();
        assert_eq!(addr.to_string(), "tcp:[::1]:0");
        let err = "unix:/a".parse::<ListenAddr>().unwrap_err();
        assert!(err.contains("not supported on Windows"), "{err}");
    }
}
