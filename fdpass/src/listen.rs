//! Listening addresses for `fdpass listen`.

use std::fmt;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use crate::fail::{self, Failure, Result};
use crate::socket::{Listening, SocketName};

/// `tcp:HOST:PORT` or `unix:SOCKET`.
#[derive(Clone, Debug)]
pub enum ListenAddr {
    Tcp { host: String, port: u16 },
    Unix(SocketName),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or("a TCP address is tcp:HOST:PORT, e.g. tcp:127.0.0.1:8080")?;
            let port = port
                .parse()
                .map_err(|_| format!("{port:?} is not a port number (0 to 65535)"))?;
            let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6,
                None => host,
            };
            if host.is_empty() {
                return Err("the host is missing: tcp:HOST:PORT, e.g. tcp:0.0.0.0:80".into());
            }
            Ok(ListenAddr::Tcp {
                host: host.into(),
                port,
            })
        } else if let Some(rest) = s.strip_prefix("unix:") {
            rest.parse().map(ListenAddr::Unix)
        } else {
            Err("an address is tcp:HOST:PORT or unix:SOCKET".into())
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            ListenAddr::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            ListenAddr::Unix(socket) => write!(f, "unix:{socket}"),
        }
    }
}

impl ListenAddr {
    /// The default name of its fd.
    pub fn kind(&self) -> &'static str {
        match self {
            ListenAddr::Tcp { .. } => "tcp",
            ListenAddr::Unix(_) => "unix",
        }
    }

    /// Binds and listens; the socket is close-on-exec until it is laid out
    /// for the command.
    pub fn listen(&self) -> Result<Bound> {
        match self {
            ListenAddr::Tcp { host, port } => TcpListener::bind((host.as_str(), *port))
                .map(Bound::Tcp)
                .map_err(|err| {
                    let code = match err.kind() {
                        std::io::ErrorKind::AddrInUse => fail::CANT_CREATE,
                        _ => fail::OS,
                    };
                    Failure::new(code, format!("cannot listen at {self}: {err}"))
                }),
            ListenAddr::Unix(socket) => socket.listen().map(Bound::Unix),
        }
    }
}

/// A listening socket; a unix socket's file is removed if it is dropped
/// before [`Bound::into_fd`].
pub enum Bound {
    Tcp(TcpListener),
    Unix(Listening),
}

impl Bound {
    /// The socket, its file (if any) kept for whoever gets the socket.
    pub fn into_fd(self) -> OwnedFd {
        match self {
            Bound::Tcp(listener) => listener.into(),
            Bound::Unix(listening) => listening.keep().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for text in [
            "tcp:127.0.0.1:8080",
            "tcp:[::1]:0",
            "tcp:localhost:80",
            "unix:/tmp/a.sock",
            "unix:@name",
        ] {
            let addr: ListenAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn bad_addresses_are_refused() {
        for text in [
            "",
            "tcp:",
            "tcp:80",
            "tcp::80",
            "tcp:host:port",
            "tcp:h:70000",
            "udp:a:1",
            "unix:",
            "/tmp/a",
        ] {
            assert!(text.parse::<ListenAddr>().is_err(), "{text:?}");
        }
    }
}
