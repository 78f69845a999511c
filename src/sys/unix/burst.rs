//! Bursts: up to [`MAX_BURST`] one-fd `IO::FDPass` messages in one
//! `sendmmsg`/`recvmmsg` where the OS has them, a loop of single messages
//! elsewhere.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::msg;
use crate::Received;

/// The most messages one burst call moves.
pub(crate) const MAX_BURST: usize = 64;

/// How many fds a message in a burst may bring. Linux closes the fds that
/// do not fit the buffer, so a small one is safe there; elsewhere each
/// message gets the full room of a single receive.
#[cfg(all(fdpass_recvmmsg, fdpass_linux_kernel))]
const BURST_MSG_FDS: usize = 16;
#[cfg(all(fdpass_recvmmsg, not(fdpass_linux_kernel)))]
const BURST_MSG_FDS: usize = msg::RECV_FDS;

#[cfg(fdpass_recvmmsg)]
const BURST_MSG_SPACE: usize = rustix::cmsg_space!(ScmRights(BURST_MSG_FDS)) + 64;

// The burst receive relies on MSG_CMSG_CLOEXEC: it has no step at which to
// mark fds one by one.
#[cfg(all(fdpass_recvmmsg, not(fdpass_cmsg_cloexec)))]
compile_error!("recvmmsg is used only where MSG_CMSG_CLOEXEC exists");

/// Sends one `IO::FDPass` message (the byte `0` with one fd) per fd of
/// `fds`, at most [`MAX_BURST`] of them, and returns how many were sent.
///
/// Linux: one `sendmmsg`. Elsewhere one `sendmsg` per message; after the
/// first, an error ends the burst early and is left for the next call.
#[cfg(fdpass_sendmmsg)]
pub(crate) fn send_burst(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendAncillaryMessage};
    use std::io::IoSlice;
    use std::mem::MaybeUninit;

    let fds = &fds[..fds.len().min(MAX_BURST)];
    let iov = [IoSlice::new(&[0])];
    let mut spaces = [[MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))]; MAX_BURST];
    let mut controls = spaces
        .each_mut()
        .map(|space| SendAncillaryBuffer::new(space));
    for (control, fd) in controls.iter_mut().zip(fds) {
        if !control.push(SendAncillaryMessage::ScmRights(std::slice::from_ref(fd))) {
            return Err(io::Error::other("no room for an fd in the control buffer"));
        }
    }
    let mut msgs = controls
        .each_mut()
        .map(|control| MMsgHdr::new(&iov, control));
    super::retry(|| {
        Ok(rustix::net::sendmmsg(
            socket,
            &mut msgs[..fds.len()],
            msg::SEND_FLAGS,
        )?)
    })
}

#[cfg(not(fdpass_sendmmsg))]
pub(crate) fn send_burst(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut sent = 0;
    for fd in fds.iter().take(MAX_BURST) {
        match msg::send_fds(socket, &[0], std::slice::from_ref(fd)) {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Receives up to `bytes.len()` (at most [`MAX_BURST`]) pending messages of one
/// data byte each: message `i`'s byte goes to `bytes[i]`, what came with it
/// to `got[i]`, and its fds to `keep(i, fd)`, which returns those it has no
/// room for; they are closed and counted. Returns how many messages came.
///
/// Waits for the first message if the socket blocks, never for more.
/// Where the OS has `recvmmsg`, one call; elsewhere one `recvmsg` per
/// message, the later ones with `MSG_DONTWAIT`.
#[cfg(fdpass_recvmmsg)]
pub(crate) fn recv_burst(
    socket: BorrowedFd<'_>,
    bytes: &mut [u8],
    got: &mut [Received],
    mut keep: impl FnMut(usize, OwnedFd) -> Option<OwnedFd>,
) -> io::Result<usize> {
    use super::libc_result;
    use msg::Space;
    use std::os::fd::AsRawFd;
    use std::ptr;

    let max = bytes.len().min(got.len()).min(MAX_BURST);
    let mut spaces = [const { Space::<BURST_MSG_SPACE>::new() }; MAX_BURST];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
    // bytes (null pointers, zero lengths) are valid values.
    let mut iovs: [libc::iovec; MAX_BURST] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_BURST] = unsafe { std::mem::zeroed() };
    for (((msg, iov), byte), space) in msgs
        .iter_mut()
        .zip(&mut iovs)
        .zip(bytes.iter_mut())
        .zip(&mut spaces)
    {
        iov.iov_base = ptr::from_mut(byte).cast();
        iov.iov_len = 1;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_control = space.0.as_mut_ptr().cast();
        msg.msg_hdr.msg_controllen = BURST_MSG_SPACE as _;
    }
    let flags = libc::MSG_WAITFORONE | libc::MSG_CMSG_CLOEXEC;
    let received = super::retry(|| {
        // SAFETY: the first `max` headers point at one byte of `bytes` and
        // at `BURST_MSG_SPACE` bytes of `spaces` each, all alive and
        // unaliased for the call; the kernel writes within those bounds.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                max as _,
                flags as _,
                ptr::null_mut(),
            )
        };
        libc_result(n as isize)
    })?;

    // Every message's fds are now this process's: hand each to `keep` or
    // close it, with no early return until all are done.
    for (i, (msg, space)) in msgs.iter().zip(&mut spaces).take(received).enumerate() {
        let hdr = &msg.msg_hdr;
        let mut this = Received {
            bytes: (msg.msg_len as usize).min(1),
            data_truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            control_truncated: hdr.msg_flags & libc::MSG_CTRUNC != 0,
            ..Received::default()
        };
        #[allow(clippy::unnecessary_cast)] // `socklen_t` on the BSDs
        // SAFETY: the kernel wrote `msg_controllen` bytes of control data
        // into this message's space.
        let control = unsafe { space.received(hdr.msg_controllen as usize) };
        // SAFETY: `control` is the control data of message `i`. Cannot
        // fail: with MSG_CMSG_CLOEXEC there is nothing to mark.
        unsafe { msg::take_control(control, &mut this, |fd| keep(i, fd))? };
        got[i] = this;
    }
    Ok(received)
}

#[cfg(not(fdpass_recvmmsg))]
pub(crate) fn recv_burst(
    socket: BorrowedFd<'_>,
    bytes: &mut [u8],
    got: &mut [Received],
    mut keep: impl FnMut(usize, OwnedFd) -> Option<OwnedFd>,
) -> io::Result<usize> {
    let mut flags = msg::RECV_FLAGS;
    let mut received = 0;
    for (i, (byte, this)) in bytes.iter_mut().zip(got).take(MAX_BURST).enumerate() {
        match msg::recv_one(socket, std::slice::from_mut(byte), flags, |fd| keep(i, fd)) {
            Ok(r) => *this = r,
            Err(e) if received == 0 => return Err(e),
            Err(_) => break,
        }
        received += 1;
        if this.bytes == 0 && this.fds_received == 0 {
            break; // the end of the stream: nothing follows
        }
        flags |= rustix::net::RecvFlags::DONTWAIT;
    }
    Ok(received)
}
