//! The unix sockets this crate makes itself: a connection to an address,
//! and a datagram sent to one.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SocketType};

use super::msg::{no_sigpipe, MAX_FDS, SEND_FLAGS, SEND_SPACE};
use super::{retry, set_cloexec};

/// Sends `data` with `fds` attached in one datagram, from a new unbound
/// datagram socket, to the unix socket at `address`: a path, or on Linux
/// `@name` for a name in the abstract namespace. Never waits: a receiver
/// whose queue is full (one that has stopped reading) gives `WouldBlock`
/// at once, with nothing sent, where a blocking send would wait until it
/// reads again.
pub(crate) fn send_datagram(
    address: &std::ffi::OsStr,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let to = unix_address(address)?;
    let socket = unix_socket(SocketType::DGRAM)?;
    let mut space = [MaybeUninit::<u8>::uninit(); SEND_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot send {} fds in one message: the limit is {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    no_sigpipe(socket.as_fd())?;
    let iov = [IoSlice::new(data)];
    let sent = retry(|| {
        Ok(rustix::net::sendmsg_addr(
            &socket,
            &to,
            &iov,
            &mut control,
            SEND_FLAGS | rustix::net::SendFlags::DONTWAIT,
        )?)
    })?;
    if sent == data.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the datagram was cut short",
        ))
    }
}

/// A new close-on-exec unix socket of type `ty`: marked atomically where
/// the OS can, right after it is made on Apple systems.
fn unix_socket(ty: SocketType) -> io::Result<OwnedFd> {
    #[cfg(not(fdpass_apple))]
    let flags = rustix::net::SocketFlags::CLOEXEC;
    #[cfg(fdpass_apple)]
    let flags = rustix::net::SocketFlags::empty();
    let socket = rustix::net::socket_with(rustix::net::AddressFamily::UNIX, ty, flags, None)?;
    if cfg!(fdpass_apple) {
        set_cloexec(socket.as_fd())?;
    }
    Ok(socket)
}

/// A unix socket address: a path, or on Linux `@name` for a name in the
/// abstract namespace.
fn unix_address(address: &std::ffi::OsStr) -> io::Result<rustix::net::SocketAddrUnix> {
    use rustix::net::SocketAddrUnix;
    use std::os::unix::ffi::OsStrExt;

    let bytes = address.as_bytes();
    Ok(match bytes.strip_prefix(b"@") {
        #[cfg(fdpass_linux_kernel)]
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        _ => SocketAddrUnix::new(bytes)?,
    })
}

/// Connects a new close-on-exec stream socket to the unix socket at
/// `address` without waiting: a listener whose backlog is full gives
/// `WouldBlock` at once, where a blocking connect would wait for as long
/// as the listener lets it. The socket is left blocking.
pub(crate) fn connect_unix(address: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let to = unix_address(address)?;
    let socket = unix_socket(SocketType::STREAM)?;
    rustix::io::ioctl_fionbio(&socket, true)?;
    retry(|| Ok(rustix::net::connect(&socket, &to)?))?;
    rustix::io::ioctl_fionbio(&socket, false)?;
    no_sigpipe(socket.as_fd())?;
    Ok(socket)
}
