//! What an fd of this process is.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::net::SocketType;

use crate::{FdKind, SocketAddress, SocketFamily, SocketInfo};

/// Describes an fd of this process (`fstat`, and for a socket
/// `getsockname`, `SO_TYPE` and `SO_ACCEPTCONN`).
pub(crate) fn describe(fd: BorrowedFd<'_>) -> io::Result<FdKind> {
    use rustix::fs::FileType;
    let stat = rustix::fs::fstat(fd)?;
    Ok(match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => FdKind::File(own_path(fd)),
        FileType::Directory => FdKind::Directory(own_path(fd)),
        FileType::Fifo => FdKind::Pipe,
        FileType::Socket => FdKind::Socket(describe_socket(fd)?),
        _ => FdKind::Other(own_link(fd).map(|link| link.display().to_string())),
    })
}

/// The path of a file or directory of this process.
fn own_path(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    // Not a path but a name such as `anon_inode:[eventfd]`.
    own_link(fd).filter(|link| link.is_absolute())
}

/// What `/proc/self/fd` says an fd of this process is.
#[cfg(fdpass_linux_kernel)]
fn own_link(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .ok()
}

#[cfg(not(fdpass_linux_kernel))]
fn own_link(_fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    None
}

fn describe_socket(fd: BorrowedFd<'_>) -> io::Result<SocketInfo> {
    use rustix::net::{AddressFamily, SocketAddr, SocketAddrUnix};
    let local = rustix::net::getsockname(fd)?;
    let family = match local.address_family() {
        AddressFamily::UNIX => SocketFamily::Unix,
        AddressFamily::INET => SocketFamily::Inet,
        AddressFamily::INET6 => SocketFamily::Inet6,
        _ => SocketFamily::Other,
    };
    let address = match family {
        SocketFamily::Inet | SocketFamily::Inet6 => {
            SocketAddr::try_from(local).ok().map(SocketAddress::Inet)
        }
        SocketFamily::Unix => SocketAddrUnix::try_from(local).ok().and_then(|addr| {
            addr.path()
                .map(|path| {
                    use std::os::unix::ffi::OsStrExt;
                    let path = std::ffi::OsStr::from_bytes(path.to_bytes());
                    SocketAddress::Path(path.into())
                })
                .or_else(|| unix_abstract_name(&addr))
        }),
        _ => None,
    };
    let socket_type = match rustix::net::sockopt::socket_type(fd)? {
        SocketType::STREAM => crate::SocketType::Stream,
        SocketType::DGRAM => crate::SocketType::Datagram,
        SocketType::SEQPACKET => crate::SocketType::SeqPacket,
        _ => crate::SocketType::Other,
    };
    Ok(SocketInfo {
        family,
        socket_type,
        listening: is_listening(fd)?,
        local: address,
    })
}

/// An abstract unix socket name.
#[cfg(fdpass_linux_kernel)]
fn unix_abstract_name(addr: &rustix::net::SocketAddrUnix) -> Option<SocketAddress> {
    addr.abstract_name()
        .map(|name| SocketAddress::Abstract(name.to_vec()))
}

#[cfg(not(fdpass_linux_kernel))]
fn unix_abstract_name(_addr: &rustix::net::SocketAddrUnix) -> Option<SocketAddress> {
    None
}

/// Whether a socket is listening (`SO_ACCEPTCONN`).
#[cfg(not(fdpass_apple))]
fn is_listening(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_acceptconn(fd)?)
}

/// Apple systems have no `SO_ACCEPTCONN`: a stream socket that is bound and
/// has no peer is taken to be listening.
#[cfg(fdpass_apple)]
fn is_listening(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_type(fd)? == SocketType::STREAM
        && rustix::net::getpeername(fd).is_err())
}
