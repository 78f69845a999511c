//! What an fd of this process is.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use rustix::net::SocketType;

use crate::{FdKind, SocketAddress, SocketFamily, SocketInfo};

/// Describes an fd of this process (`fstat`, and for a socket
/// `getsockname`, `SO_TYPE` and `SO_ACCEPTCONN`).
pub(crate) fn describe(fd: BorrowedFd<'_>) -> io::Result<FdKind> {
    let stat = rustix::fs::fstat(fd)?;
    let ty = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    match kind_by_type(ty, own_link(fd)) {
        Some(kind) => Ok(kind),
        None => Ok(FdKind::Socket(describe_socket(fd)?)),
    }
}

/// What an fd is, by the file type its `stat` gives and by what its link
/// in `/proc/PID/fd` says (`None` where there is no `/proc`): the one rule
/// for the fds of this process and of another. `None` for a socket, which
/// each describes its own way (this process asks the socket; another's is
/// looked up in `/proc/PID/net`).
///
/// A link that is not a path names an anonymous inode (`anon_inode:[eventfd]`,
/// `anon_inode:[pidfd]`), which may stat as a regular file: that is
/// [`FdKind::Other`], with the link as its name.
pub(crate) fn kind_by_type(ty: rustix::fs::FileType, link: Option<PathBuf>) -> Option<FdKind> {
    use rustix::fs::FileType;
    let path = match link {
        Some(link) if !link.is_absolute() => Err(link),
        link => Ok(link),
    };
    Some(match (ty, path) {
        (FileType::Socket, _) => return None,
        (FileType::Fifo, _) => FdKind::Pipe,
        (FileType::RegularFile, Ok(path)) => FdKind::File(path),
        (FileType::Directory, Ok(path)) => FdKind::Directory(path),
        (FileType::CharacterDevice, Ok(path)) => FdKind::CharDevice(path),
        (FileType::BlockDevice, Ok(path)) => FdKind::BlockDevice(path),
        (_, Ok(path)) => FdKind::Other(path.map(|path| path.display().to_string())),
        (_, Err(name)) => FdKind::Other(Some(name.display().to_string())),
    })
}

/// What `/proc/self/fd` says an fd of this process is.
#[cfg(fdpass_linux_kernel)]
fn own_link(fd: BorrowedFd<'_>) -> Option<PathBuf> {
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .ok()
}

#[cfg(not(fdpass_linux_kernel))]
fn own_link(_fd: BorrowedFd<'_>) -> Option<PathBuf> {
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
