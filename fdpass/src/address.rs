//! Addresses: unix socket names (a path, or `@name` in Linux's abstract
//! namespace), and the listening addresses of `fdpass listen`.

use std::fmt;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use io_fdpass::Deadline;

use crate::fail::{self, Failure, Party, Result};

mod bind;

/// How long a client waits for a peer that is not listening yet.
pub const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// The size of `sun_path`, where a unix socket's address goes: 108 bytes on
/// Linux, 104 on the BSDs and macOS.
const SUN_PATH: usize =
    std::mem::size_of::<libc::sockaddr_un>() - std::mem::offset_of!(libc::sockaddr_un, sun_path);

/// The longest socket path, or abstract name, that fits there with the
/// byte before or after it.
const MAX_NAME: usize = SUN_PATH - 1;

/// Where a unix socket lives.
#[derive(Clone, Debug)]
pub enum SocketName {
    Path(PathBuf),
    /// Linux's abstract namespace: no file, gone when the last socket closes.
    Abstract(String),
}

impl FromStr for SocketName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix('@') {
            Some("") => Err("an abstract socket name needs text after '@'".into()),
            Some(name) if name.len() > MAX_NAME => Err(format!(
                "the name is {} bytes long, and an abstract socket name can have at most {MAX_NAME} (the kernel's sun_path holds {SUN_PATH} bytes, with the NUL before the name): use a shorter name",
                name.len()
            )),
            Some(name) if cfg!(fdpass_abstract_names) => Ok(SocketName::Abstract(name.into())),
            Some(_) => Err("abstract socket names ('@name') exist only on Linux".into()),
            None if s.is_empty() => Err("the socket path is empty".into()),
            None if s.len() > MAX_NAME => Err(format!(
                "the path is {} bytes long, and a unix socket's path can have at most {MAX_NAME} (the kernel's sun_path holds {SUN_PATH} bytes, with the closing NUL): use a shorter path (a relative one counts from the current directory){}",
                s.len(),
                if cfg!(fdpass_abstract_names) {
                    ", or an @name, which needs no file"
                } else {
                    ""
                }
            )),
            None => Ok(SocketName::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketName::Path(path) => write!(f, "{}", path.display()),
            SocketName::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl SocketName {
    /// The name as the library takes it: the path, or `@name`.
    pub fn client_path(&self) -> PathBuf {
        match self {
            SocketName::Path(path) => path.clone(),
            SocketName::Abstract(name) => PathBuf::from(format!("@{name}")),
        }
    }

    /// Connects to a listening socket within `timeout`; `what` says who
    /// should be listening, for the error message. A peer started a moment
    /// ago in the background (`fdpass hold SOCKET &`) may not be listening
    /// yet: for up to [`STARTUP_GRACE`] a missing or refusing socket is
    /// tried again, and so is a full backlog until the timeout.
    pub fn connect(&self, what: &str, timeout: Duration) -> Result<UnixStream> {
        let deadline = Deadline::after(timeout);
        io_fdpass::connect_unix_retrying(self.client_path(), deadline, STARTUP_GRACE).map_err(
            |err| {
                let code = fail::code(err.kind(), Party::Peer);
                Failure::new(
                    code,
                    match err.kind() {
                        ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                            format!("{err}: is {what} running?")
                        }
                        ErrorKind::TimedOut => {
                            format!("{what} at {self} accepted no connection within {timeout:?}")
                        }
                        _ => err.to_string(),
                    },
                )
            },
        )
    }

    /// Listens at this name. A socket file left behind by a process that
    /// has gone is replaced; anything else at the path is refused.
    pub fn listen(&self) -> Result<Listening> {
        self.listen_as(None)
    }

    /// Listens at this name; a socket file gets `access`, and never more
    /// than mode 0600 before it has it. The file is made, and given its
    /// mode and group, where no other user can reach it, and only then
    /// put at the path (see [`bind`]): nothing is done through a path that
    /// another user could swap for a symlink meanwhile.
    pub fn listen_as(&self, access: Option<&Access>) -> Result<Listening> {
        let (listener, identity) = match self {
            SocketName::Path(path) => {
                let made = bind::bind(self, path, access)?;
                (made.listener, Some(made.identity))
            }
            SocketName::Abstract(name) => {
                let listener = abstract_addr(name)
                    .and_then(|a| UnixListener::bind_addr(&a))
                    .map_err(|err| match err.kind() {
                        ErrorKind::AddrInUse => Failure::new(
                            fail::CANT_CREATE,
                            format!(
                                "cannot listen at {self}: another socket is already listening there"
                            ),
                        ),
                        _ => Failure::os(format_args!("cannot listen at {self}"), err),
                    })?;
                (listener, None)
            }
        };
        let file = match self {
            SocketName::Path(path) => identity.map(|id| (path.clone(), id)),
            SocketName::Abstract(_) => None,
        };
        Ok(Listening {
            listener,
            file: SocketFile(file),
        })
    }
}

/// Who may connect to a socket file: its mode, and its group.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub mode: u32,
    pub group: Option<u32>,
}

/// The device and inode of the socket file at `path`, which tell one
/// socket file from another later made at the same path.
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type()
        .is_socket()
        .then(|| (meta.dev(), meta.ino()))
}

#[cfg(fdpass_abstract_names)]
fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(fdpass_abstract_names))]
fn abstract_addr(_: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::new(
        ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// A listening socket; its file, if it has one, is removed when dropped.
pub struct Listening {
    pub listener: UnixListener,
    file: SocketFile,
}

impl Listening {
    /// The device and inode of the socket file this process made, taken
    /// where no other user could have swapped it.
    pub fn identity(&self) -> Option<(u64, u64)> {
        self.file.0.as_ref().map(|(_, identity)| *identity)
    }

    /// The listener, its file left in place for whoever gets the listener.
    pub fn keep(self) -> UnixListener {
        let Listening { listener, mut file } = self;
        file.0 = None;
        listener
    }
}

/// A socket file that this process made, and its identity; removed when
/// dropped, while it is still that file.
struct SocketFile(Option<(PathBuf, (u64, u64))>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some((path, identity)) = &self.0 {
            if file_identity(path) == Some(*identity) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

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

/// What to take from the process: an fd number, or the address of a
/// socket it listens on.
#[derive(Clone, Debug)]
pub enum What {
    Fd(RawFd),
    Listening(ListenAddr),
}

impl FromStr for What {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(What::Fd)
                .map_err(|_| format!("{s} is not an fd number"));
        }
        s.parse()
            .map(What::Listening)
            .map_err(|e| format!("{e} (WHAT is an fd number, tcp:HOST:PORT or unix:SOCKET)"))
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::Fd(fd) => write!(f, "fd {fd}"),
            What::Listening(addr) => write!(f, "the socket listening at {addr}"),
        }
    }
}

impl What {
    /// The default name of its fd.
    pub fn kind(&self) -> &'static str {
        match self {
            What::Fd(_) => "unknown",
            What::Listening(addr) => addr.kind(),
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
    fn socket_names_fit_in_sun_path() {
        #[cfg(target_os = "linux")]
        assert_eq!(SUN_PATH, 108);
        for (fits, name) in [
            (format!("/{}", "x".repeat(MAX_NAME - 1)), "shorter path"),
            (format!("@{}", "x".repeat(MAX_NAME)), "shorter name"),
        ] {
            if cfg!(fdpass_abstract_names) || fits.starts_with('/') {
                assert!(fits.parse::<SocketName>().is_ok(), "{fits}");
            }
            let err = format!("{fits}x").parse::<SocketName>().unwrap_err();
            assert!(err.contains(&format!("at most {MAX_NAME}")), "{err}");
            assert!(err.contains(name), "{err}");
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

    #[test]
    fn what_is_an_fd_number_or_an_address() {
        assert!(matches!("3".parse::<What>(), Ok(What::Fd(3))));
        assert!(matches!(
            "tcp:127.0.0.1:80".parse::<What>(),
            Ok(What::Listening(ListenAddr::Tcp { port: 80, .. }))
        ));
        assert!(matches!("unix:/a".parse::<What>(), Ok(What::Listening(_))));
        for bad in ["", "-1", "99999999999", "3x", "udp:a:1", "/tmp/a"] {
            let e = bad.parse::<What>().unwrap_err();
            assert!(e.contains("fd number"), "{bad:?}: {e}");
        }
    }
}
