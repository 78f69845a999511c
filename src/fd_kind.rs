//! What an fd is: a file, a pipe, a device, a socket and its address. One
//! description for the fds of this process ([`FdKind::of`]) and for those
//! of another ([`Process::fds`](crate::process::Process::fds)), with one
//! wording for messages.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::sys;

/// What an fd refers to.
///
/// # Examples
///
/// ```
/// use io_fdpass::FdKind;
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// match FdKind::of(&listener)? {
///     FdKind::Socket(socket) => assert!(socket.listening),
///     other => panic!("a listener is {other}"),
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdKind {
    /// A regular file, with its path where the system tells it (Linux and
    /// Android; a file deleted since it was opened has ` (deleted)` after
    /// its path, as Linux shows it).
    File(Option<PathBuf>),
    /// A directory, with its path where the system tells it.
    Directory(Option<PathBuf>),
    /// A pipe, or a FIFO.
    Pipe,
    /// A socket.
    Socket(SocketInfo),
    /// A character device (`/dev/null`, a terminal, `/dev/urandom`…), with
    /// its path where the system tells it.
    CharDevice(Option<PathBuf>),
    /// A block device (a disk, a partition, a loop device), with its path
    /// where the system tells it.
    BlockDevice(Option<PathBuf>),
    /// Anything else: an eventfd, a pidfd, an epoll instance…, with what
    /// the system calls it where it tells (`anon_inode:[eventfd]`).
    Other(Option<String>),
}

/// What a socket is.
///
/// # Examples
///
/// ```
/// use io_fdpass::{FdKind, SocketFamily, SocketType};
///
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let FdKind::Socket(info) = FdKind::of(&socket)? else { unreachable!() };
/// assert_eq!(info.family, SocketFamily::Inet);
/// assert_eq!(info.socket_type, SocketType::Datagram);
/// assert_eq!(info.local.unwrap().to_string(), socket.local_addr()?.to_string());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// Its address family.
    pub family: SocketFamily,
    /// Its type.
    pub socket_type: SocketType,
    /// Whether it listens for connections.
    pub listening: bool,
    /// The address it is bound to; `None` for an unbound socket, or where
    /// the system does not tell.
    pub local: Option<SocketAddress>,
}

/// A socket's address family.
///
/// # Examples
///
/// ```
/// use io_fdpass::SocketFamily;
///
/// assert_eq!(SocketFamily::Inet6.to_string(), "IPv6");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketFamily {
    /// `AF_UNIX`.
    Unix,
    /// `AF_INET`.
    Inet,
    /// `AF_INET6`.
    Inet6,
    /// Another family (netlink, packet…), or one that could not be told:
    /// for another process's socket, one that none of the tables read
    /// lists.
    Other,
}

/// A socket's type.
///
/// # Examples
///
/// ```
/// use io_fdpass::SocketType;
///
/// assert_eq!(SocketType::SeqPacket.to_string(), "seqpacket");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketType {
    /// `SOCK_STREAM`: TCP, or a unix stream socket.
    Stream,
    /// `SOCK_DGRAM`: UDP, or a unix datagram socket.
    Datagram,
    /// `SOCK_SEQPACKET`.
    SeqPacket,
    /// Another type, or one that could not be told.
    Other,
}

/// The address a socket is bound to.
///
/// # Examples
///
/// ```
/// use io_fdpass::SocketAddress;
///
/// let tcp = SocketAddress::Inet("127.0.0.1:8080".parse().unwrap());
/// assert_eq!(tcp.to_string(), "127.0.0.1:8080");
/// assert_eq!(SocketAddress::Abstract(b"app".to_vec()).to_string(), "@app");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketAddress {
    /// An IPv4 or IPv6 address and port.
    Inet(std::net::SocketAddr),
    /// A unix socket bound to a path, as the process that bound it gave
    /// the path (relative to its working directory then, if relative).
    Path(PathBuf),
    /// A unix socket's name in Linux's abstract namespace, without the
    /// leading NUL byte. Read from `/proc`, every NUL byte within the name
    /// reads as `@`.
    Abstract(Vec<u8>),
}

impl FdKind {
    /// Describes `fd`, an fd of this process: `fstat`, and for a socket
    /// `getsockname` and the socket options `SO_TYPE` and `SO_ACCEPTCONN`
    /// (on Apple systems, which lack the last, a bound stream socket with
    /// no peer is taken to be listening). Paths come from `/proc/self/fd`
    /// on Linux and Android; elsewhere they are `None`.
    ///
    /// # Errors
    ///
    /// The error of `fstat` or of a socket call, such as `EBADF`.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let file = std::fs::File::open("Cargo.toml")?;
    /// assert!(matches!(FdKind::of(&file)?, FdKind::File(_)));
    /// println!("{}", FdKind::of(&file)?); // the regular file /…/Cargo.toml
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(fd: impl AsFd) -> io::Result<FdKind> {
        sys::describe(fd.as_fd())
    }

    /// What it is, in a word or two: `file`, `directory`, `pipe`,
    /// `socket`, `character device`, `block device` or `other`, as
    /// `fdpass fds --json` says it (and a holder's
    /// [`Entry::kind`](crate::holder::protocol::Entry::kind), for all but a
    /// socket). More words may come with more variants: a reader of them
    /// takes one it does not know as `other`.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let null = std::fs::File::open("/dev/null")?;
    /// assert_eq!(FdKind::of(&null)?.word(), "character device");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn word(&self) -> &'static str {
        match self {
            FdKind::File(_) => "file",
            FdKind::Directory(_) => "directory",
            FdKind::Pipe => "pipe",
            FdKind::Socket(_) => "socket",
            FdKind::CharDevice(_) => "character device",
            FdKind::BlockDevice(_) => "block device",
            FdKind::Other(_) => "other",
        }
    }

    /// The path of a file, directory or device, where the system tells it.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let kind = FdKind::CharDevice(Some("/dev/null".into()));
    /// assert_eq!(kind.path(), Some(std::path::Path::new("/dev/null")));
    /// assert_eq!(FdKind::Pipe.path(), None);
    /// ```
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            FdKind::File(path)
            | FdKind::Directory(path)
            | FdKind::CharDevice(path)
            | FdKind::BlockDevice(path) => path.as_deref(),
            FdKind::Pipe | FdKind::Socket(_) | FdKind::Other(_) => None,
        }
    }

    /// The socket, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// assert!(FdKind::Pipe.socket().is_none());
    /// ```
    #[must_use]
    pub fn socket(&self) -> Option<&SocketInfo> {
        match self {
            FdKind::Socket(socket) => Some(socket),
            _ => None,
        }
    }
}

impl SocketInfo {
    /// Whether this is a listening TCP socket (IPv4 or IPv6).
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let kind = FdKind::of(&listener)?;
    /// assert!(kind.socket().is_some_and(|s| s.is_tcp_listener()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_tcp_listener(&self) -> bool {
        self.is_inet() && self.socket_type == SocketType::Stream && self.listening
    }

    /// Whether this is a listening unix stream socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let kind = FdKind::of(&a)?;
    /// assert!(!kind.socket().unwrap().is_unix_listener());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_unix_listener(&self) -> bool {
        self.family == SocketFamily::Unix
            && self.socket_type == SocketType::Stream
            && self.listening
    }

    /// Whether this is a TCP stream (IPv4 or IPv6) that does not listen:
    /// one end of a connection, or a socket not yet connected.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// assert!(FdKind::of(&stream)?.socket().unwrap().is_tcp_stream());
    /// assert!(!FdKind::of(&listener)?.socket().unwrap().is_tcp_stream());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_tcp_stream(&self) -> bool {
        self.is_inet() && self.socket_type == SocketType::Stream && !self.listening
    }

    /// Whether this is a unix stream socket that does not listen.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// assert!(FdKind::of(&a)?.socket().unwrap().is_unix_stream());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_unix_stream(&self) -> bool {
        self.family == SocketFamily::Unix
            && self.socket_type == SocketType::Stream
            && !self.listening
    }

    /// Whether this is a UDP socket (IPv4 or IPv6).
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::FdKind;
    ///
    /// let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// assert!(FdKind::of(&udp)?.socket().unwrap().is_udp());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_udp(&self) -> bool {
        self.is_inet() && self.socket_type == SocketType::Datagram
    }

    fn is_inet(&self) -> bool {
        matches!(self.family, SocketFamily::Inet | SocketFamily::Inet6)
    }
}

impl fmt::Display for FdKind {
    /// A phrase for messages: `the regular file /etc/hosts`, `a pipe`,
    /// `a listening TCP socket on 127.0.0.1:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdKind::File(Some(path)) => write!(f, "the regular file {}", path.display()),
            FdKind::File(None) => f.write_str("a regular file"),
            FdKind::Directory(Some(path)) => write!(f, "the directory {}", path.display()),
            FdKind::Directory(None) => f.write_str("a directory"),
            FdKind::Pipe => f.write_str("a pipe"),
            FdKind::Socket(socket) => socket.fmt(f),
            FdKind::CharDevice(Some(path)) => write!(f, "the character device {}", path.display()),
            FdKind::CharDevice(None) => f.write_str("a character device"),
            FdKind::BlockDevice(Some(path)) => write!(f, "the block device {}", path.display()),
            FdKind::BlockDevice(None) => f.write_str("a block device"),
            FdKind::Other(Some(what)) => {
                write!(f, "{what} (neither a file, a pipe, a device nor a socket)")
            }
            FdKind::Other(None) => f.write_str("neither a file, a pipe, a device nor a socket"),
        }
    }
}

impl fmt::Display for SocketInfo {
    /// `a listening TCP socket on 127.0.0.1:8080`, `a unix datagram
    /// socket`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.listening { "listening " } else { "" };
        let what = match (self.family, self.socket_type) {
            (SocketFamily::Unix, ty) => format!("unix {ty}"),
            (SocketFamily::Inet | SocketFamily::Inet6, SocketType::Stream) => "TCP".into(),
            (SocketFamily::Inet | SocketFamily::Inet6, SocketType::Datagram) => "UDP".into(),
            (SocketFamily::Inet | SocketFamily::Inet6, ty) => format!("IP {ty}"),
            (SocketFamily::Other, SocketType::Other) => "non-IP, non-unix".into(),
            (SocketFamily::Other, ty) => format!("non-IP, non-unix {ty}"),
        };
        write!(f, "a {role}{what} socket")?;
        match &self.local {
            Some(local) => write!(f, " on {local}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for SocketFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketFamily::Unix => "unix",
            SocketFamily::Inet => "IPv4",
            SocketFamily::Inet6 => "IPv6",
            SocketFamily::Other => "other",
        })
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketType::Stream => "stream",
            SocketType::Datagram => "datagram",
            SocketType::SeqPacket => "seqpacket",
            SocketType::Other => "other",
        })
    }
}

impl fmt::Display for SocketAddress {
    /// `127.0.0.1:8080`, `[::1]:80`, `/run/app.sock`, `@name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Inet(addr) => addr.fmt(f),
            SocketAddress::Path(path) => path.display().fmt(f),
            SocketAddress::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(family: SocketFamily, ty: SocketType, listening: bool) -> FdKind {
        FdKind::Socket(SocketInfo {
            family,
            socket_type: ty,
            listening,
            local: None,
        })
    }

    #[test]
    fn phrases() {
        use SocketFamily::{Inet, Inet6, Unix};
        use SocketType::{Datagram, SeqPacket, Stream};
        let listener = FdKind::Socket(SocketInfo {
            family: Inet6,
            socket_type: Stream,
            listening: true,
            local: Some(SocketAddress::Inet("[::1]:80".parse().unwrap())),
        });
        for (kind, text) in [
            (listener, "a listening TCP socket on [::1]:80"),
            (socket(Inet, Datagram, false), "a UDP socket"),
            (socket(Unix, SeqPacket, false), "a unix seqpacket socket"),
            (
                socket(SocketFamily::Other, SocketType::Other, false),
                "a non-IP, non-unix socket",
            ),
            (FdKind::File(Some("/a b".into())), "the regular file /a b"),
            (FdKind::Pipe, "a pipe"),
            (
                FdKind::CharDevice(Some("/dev/null".into())),
                "the character device /dev/null",
            ),
            (FdKind::BlockDevice(None), "a block device"),
            (
                FdKind::Other(Some("anon_inode:[eventfd]".into())),
                "anon_inode:[eventfd] (neither a file, a pipe, a device nor a socket)",
            ),
        ] {
            assert_eq!(kind.to_string(), text);
        }
    }
}
