//! The Unix backend: one `sendmsg` and one `recvmsg` with `SCM_RIGHTS`,
//! through rustix.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};

use crate::Received;

/// The most fds one call sends in one message (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// How many fds one received message can bring.
///
/// The receive buffer always has room for this many, whatever the caller
/// asked for: macOS installs every fd of a message in the receiver's table
/// before it truncates the control data to the buffer, so an fd that did not
/// fit would be open but never seen. Linux delivers at most `SCM_MAX_FD`;
/// the BSDs and illumos cap control data at `MCLBYTES` (2048 bytes), which is
/// 512 fds.
#[cfg(fdpass_linux_kernel)]
const RECV_FDS: usize = MAX_FDS;
#[cfg(not(fdpass_linux_kernel))]
const RECV_FDS: usize = 512;

/// Room for control messages other than `SCM_RIGHTS` that the receiving
/// socket may have asked for (`SO_PASSCRED`, `SO_PASSSEC`, `LOCAL_CREDS`),
/// so that they never crowd out the fds.
const OTHER_CMSG_ROOM: usize = 512;

const SEND_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));
const RECV_SPACE: usize = rustix::cmsg_space!(ScmRights(RECV_FDS)) + OTHER_CMSG_ROOM;

#[cfg(fdpass_msg_nosignal)]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(not(fdpass_msg_nosignal))]
const SEND_FLAGS: SendFlags = SendFlags::empty();

#[cfg(fdpass_cmsg_cloexec)]
const RECV_FLAGS: RecvFlags = RecvFlags::CMSG_CLOEXEC;
#[cfg(not(fdpass_cmsg_cloexec))]
const RECV_FLAGS: RecvFlags = RecvFlags::empty();

/// Sends `data` with `fds` attached in one `sendmsg`, retrying on `EINTR`.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot send {} fds in one message: the limit is {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    if data.is_empty() && !fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fds must travel with at least one data byte",
        ));
    }

    let mut space = [MaybeUninit::<u8>::uninit(); SEND_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "no room for the fds in the control buffer",
        ));
    }
    no_sigpipe(socket)?;
    let iov = [IoSlice::new(data)];
    loop {
        match rustix::net::sendmsg(socket, &iov, &mut control, SEND_FLAGS) {
            Err(Errno::INTR) => continue,
            result => return Ok(result?),
        }
    }
}

/// Receives one message with one `recvmsg`, retrying on `EINTR`.
///
/// Each fd that arrived is handed to `keep`, which returns it when it has no
/// room for it; such fds are closed and counted in `fds_discarded`. Every fd
/// still held here when this returns, by any path, is closed.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    data: &mut [u8],
    mut keep: impl FnMut(OwnedFd) -> Option<OwnedFd>,
) -> io::Result<Received> {
    let mut space = [MaybeUninit::<u8>::uninit(); RECV_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(data)];
    let msg = loop {
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RECV_FLAGS) {
            Err(Errno::INTR) => continue,
            result => break result?,
        }
    };

    let mut received = Received {
        bytes: msg.bytes.min(iov[0].len()),
        fds: 0,
        fds_discarded: 0,
        data_truncated: msg.flags.contains(ReturnFlags::TRUNC),
        control_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                set_cloexec(&fd)?;
                match keep(fd) {
                    None => received.fds += 1,
                    Some(_closed) => received.fds_discarded += 1,
                }
            }
        }
    }
    Ok(received)
}

/// Whether `socket` is a datagram socket, for telling an empty datagram from
/// an end of stream.
pub(crate) fn is_datagram(socket: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_type(socket)? == SocketType::DGRAM)
}

/// Where `recvmsg` cannot mark fds close-on-exec atomically, marks each one
/// as soon as it is seen. Another thread's `fork` + `exec` between the two
/// calls can still inherit it: the documented gap of these systems.
#[cfg(not(fdpass_cmsg_cloexec))]
fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
    let flags = fcntl_getfd(fd)?;
    Ok(fcntl_setfd(fd, flags | FdFlags::CLOEXEC)?)
}

#[cfg(fdpass_cmsg_cloexec)]
#[inline]
fn set_cloexec(_fd: &OwnedFd) -> io::Result<()> {
    Ok(())
}

/// Where `MSG_NOSIGNAL` does not exist, sets `SO_NOSIGPIPE` on the socket so
/// that a closed peer gives `EPIPE` instead of killing the process.
#[cfg(not(fdpass_msg_nosignal))]
fn no_sigpipe(socket: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_nosigpipe(socket, true)?)
}

#[cfg(fdpass_msg_nosignal)]
#[inline]
fn no_sigpipe(_socket: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}
