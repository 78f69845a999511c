//! One message: `sendmsg` with `SCM_RIGHTS` through rustix, `recvmsg`
//! through libc (see [`recv_one`] for why), and what a receive that got
//! nothing read.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AncillaryDrain, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketType,
};

use super::{libc_result, retry};
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
pub(crate) const RECV_FDS: usize = MAX_FDS;
#[cfg(not(fdpass_linux_kernel))]
pub(crate) const RECV_FDS: usize = 512;

/// Room for control messages other than `SCM_RIGHTS` that the receiving
/// socket may have asked for (`SO_PASSCRED`, `SO_PASSSEC`, `LOCAL_CREDS`),
/// so that they never crowd out the fds.
const OTHER_CMSG_ROOM: usize = 512;

pub(super) const SEND_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));
const RECV_SPACE: usize = rustix::cmsg_space!(ScmRights(RECV_FDS)) + OTHER_CMSG_ROOM;

#[cfg(fdpass_msg_nosignal)]
pub(super) const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(not(fdpass_msg_nosignal))]
pub(super) const SEND_FLAGS: SendFlags = SendFlags::empty();

#[cfg(fdpass_cmsg_cloexec)]
pub(super) const RECV_FLAGS: RecvFlags = RecvFlags::CMSG_CLOEXEC;
#[cfg(not(fdpass_cmsg_cloexec))]
pub(super) const RECV_FLAGS: RecvFlags = RecvFlags::empty();

/// Sends `data` with `fds` attached in one `sendmsg`, retrying on `EINTR`.
pub(crate) fn send_fds(
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
    retry(|| {
        Ok(rustix::net::sendmsg(
            socket,
            &iov,
            &mut control,
            SEND_FLAGS,
        )?)
    })
}

/// Receives one message with one `recvmsg`, retrying on `EINTR`.
///
/// Each fd that arrived is handed to `keep`, which returns it when it has no
/// room for it; such fds are closed and counted in `fds_discarded`. Every fd
/// still held here when this returns, by any path, is closed.
pub(crate) fn recv_fds(
    socket: BorrowedFd<'_>,
    data: &mut [u8],
    keep: impl FnMut(OwnedFd) -> Option<OwnedFd>,
) -> io::Result<Received> {
    recv_one(socket, data, RECV_FLAGS, keep)
}

/// A control buffer of `N` bytes, aligned for `cmsghdr`.
#[repr(C, align(8))]
pub(super) struct Space<const N: usize>(pub(super) [MaybeUninit<u8>; N]);

impl<const N: usize> Space<N> {
    pub(super) const fn new() -> Self {
        Space([MaybeUninit::uninit(); N])
    }

    /// The first `len` bytes, which the kernel wrote.
    ///
    /// # Safety
    ///
    /// The kernel must have initialised those bytes with the control data
    /// of one received message.
    pub(super) unsafe fn received(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(N);
        // SAFETY: initialised, as the caller promises, and within `self`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }
}

/// One `recvmsg`, with libc rather than rustix: rustix 1.1 gives neither the
/// length of the control data nor the `SCM_PIDFD` messages in it, and
/// [`take_control`] needs both to close every fd the kernel installed.
pub(super) fn recv_one(
    socket: BorrowedFd<'_>,
    data: &mut [u8],
    flags: RecvFlags,
    keep: impl FnMut(OwnedFd) -> Option<OwnedFd>,
) -> io::Result<Received> {
    let mut space = Space::<RECV_SPACE>::new();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes (null
    // pointers, zero lengths) are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.0.as_mut_ptr().cast();
    msg.msg_controllen = RECV_SPACE as _;
    let bytes = retry(|| {
        // SAFETY: `msg` points at `data` and at `space`, both alive and
        // unaliased for the call, with their lengths; the kernel writes
        // within those bounds.
        libc_result(unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, flags.bits() as _) })
    })?;

    let mut received = Received {
        bytes: bytes.min(data.len()),
        fds_received: 0,
        fds_discarded: 0,
        data_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    #[allow(clippy::unnecessary_cast)] // `socklen_t` on the BSDs
    // SAFETY: the kernel wrote `msg_controllen` bytes of control data.
    let control = unsafe { space.received(msg.msg_controllen as usize) };
    // SAFETY: `control` is the control data of the message just received.
    unsafe { take_control(control, &mut received, keep)? };
    Ok(received)
}

/// Takes every fd out of the control data of one received message: hands
/// each fd of its `SCM_RIGHTS` messages to `keep`, close-on-exec, and counts
/// in `received` those kept and those given back, which are closed here.
/// On Linux it also closes the pidfd of an `SCM_PIDFD` message, which the
/// kernel adds when the socket has `SO_PASSPIDFD` on: this crate returns
/// only the fds the peer sent, and any other would stay open unseen.
///
/// `keep` sees an fd only once nothing can fail any more: on an error,
/// every fd of the message has been closed and `keep` has seen none.
///
/// # Safety
///
/// `control` must be exactly the control data that the kernel returned with
/// one message, which makes this process the owner of every fd in it.
pub(super) unsafe fn take_control(
    control: &mut [u8],
    received: &mut Received,
    mut keep: impl FnMut(OwnedFd) -> Option<OwnedFd>,
) -> io::Result<()> {
    // SAFETY: as this function's contract says.
    let prepared = unsafe { prepare(control) };
    // SAFETY: as this function's contract says. Every message is drained
    // below, and rustix closes the fds of each that is dropped unread.
    let messages = unsafe { AncillaryDrain::parse(control) };
    let fds = messages.filter_map(|message| match message {
        RecvAncillaryMessage::ScmRights(fds) => Some(fds),
        _ => None,
    });
    match prepared {
        Ok(()) => {
            for fd in fds.flatten() {
                match keep(fd) {
                    None => received.fds_received += 1,
                    Some(_closed) => received.fds_discarded += 1,
                }
            }
            Ok(())
        }
        Err(e) => {
            fds.flatten().for_each(drop);
            Err(e)
        }
    }
}

/// The raw pass over one message's control data before its fds are
/// handed out: closes Linux's pidfds, and where `recvmsg` cannot mark fds
/// close-on-exec, marks each one. Returns the first failure to mark; the
/// pass goes on to the end regardless.
///
/// # Safety
///
/// As [`take_control`].
unsafe fn prepare(control: &mut [u8]) -> io::Result<()> {
    #[cfg_attr(fdpass_cmsg_cloexec, allow(unused_mut))]
    let mut result = Ok(());
    let each = |level, kind, fds: &mut dyn Iterator<Item = libc::c_int>| {
        let _ = (kind, &fds);
        if level != libc::SOL_SOCKET {
            return;
        }
        #[cfg(fdpass_linux_kernel)]
        if kind == SCM_PIDFD {
            // On a full fd table Linux writes the error (-EMFILE) in place
            // of the pidfd: only a real fd is closed.
            for fd in (&mut *fds).filter(|&fd| fd >= 0) {
                use std::os::fd::FromRawFd;
                // SAFETY: a pidfd the kernel installed for this process,
                // which nothing else refers to.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        #[cfg(not(fdpass_cmsg_cloexec))]
        if kind == libc::SCM_RIGHTS {
            for fd in &mut *fds {
                // SAFETY: an fd the kernel installed for this process, open
                // until the drain closes it or hands it out.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let marked = super::set_cloexec(fd);
                if result.is_ok() {
                    result = marked;
                }
            }
        }
    };
    // SAFETY: as this function's contract says.
    unsafe { for_each_message(control, each) };
    result
}

/// `SCM_PIDFD` from `<linux/socket.h>` (Linux 6.5), the same on every
/// architecture; not in the libc crate.
#[cfg(fdpass_linux_kernel)]
const SCM_PIDFD: libc::c_int = 4;

/// Calls `each(level, type, fds)` for every control message in `control`,
/// with its data read as a sequence of `int`s.
///
/// # Safety
///
/// `control` must be control data the kernel wrote, so that its headers
/// are well formed.
unsafe fn for_each_message(
    control: &mut [u8],
    mut each: impl FnMut(libc::c_int, libc::c_int, &mut dyn Iterator<Item = libc::c_int>),
) {
    let start = control.as_ptr() as usize;
    let end = start + control.len();
    // SAFETY: msghdr is a plain C struct; all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` describes `control`, whose headers the kernel wrote;
    // CMSG_NXTHDR stops at its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: a header within `control`, as above.
        let header = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA only computes an address within the message.
        let data = unsafe { libc::CMSG_DATA(cmsg) } as usize;
        #[allow(clippy::unnecessary_cast)] // `socklen_t` on some systems
        let claimed = (cmsg as usize).saturating_add(header.cmsg_len as usize);
        // Never past the buffer, whatever a header says.
        let len = claimed.min(end).saturating_sub(data);
        // SAFETY: `data..data + len` lies within `control`, which the
        // kernel initialised.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, len) };
        let mut ints = bytes
            .chunks_exact(size_of::<libc::c_int>())
            .map(|int| libc::c_int::from_ne_bytes(int.try_into().unwrap_or_default()));
        each(header.cmsg_level, header.cmsg_type, &mut ints);
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
}

/// Whether a receive on `socket` that got neither a byte nor an fd read an
/// empty message, rather than the end of the connection.
///
/// On a datagram socket it always did. On a `SOCK_SEQPACKET` socket an empty
/// record and the end read alike; Linux tells them apart by whether the peer
/// has hung up (`POLLRDHUP`, asked without waiting). Elsewhere, and on a
/// stream socket, which carries no empty messages, it was the end.
pub(crate) fn read_empty_message(socket: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(match rustix::net::sockopt::socket_type(socket)? {
        SocketType::DGRAM => true,
        #[cfg(fdpass_linux_kernel)]
        SocketType::SEQPACKET => !peer_hung_up(socket)?,
        _ => false,
    })
}

/// Whether the peer of `socket` has closed or shut down its sending side.
#[cfg(fdpass_linux_kernel)]
fn peer_hung_up(socket: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    let mut fds = [PollFd::new(&socket, PollFlags::IN | PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match retry(|| Ok(poll(&mut fds, Some(&now))?)) {
        Ok(_) => Ok(fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::RDHUP)),
        // `poll` refuses to watch more fds than RLIMIT_NOFILE allows, even
        // one at a limit of 0.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => peek_hung_up(socket),
        Err(e) => Err(e),
    }
}

/// [`peer_hung_up`] where `poll` cannot be used: a peek that does not
/// wait reads the end as nothing at all, while data, or nothing yet
/// (`EAGAIN`), means the peer is still there. It cannot tell the end from
/// a second empty record queued behind the first, which it takes for the
/// end.
#[cfg(fdpass_linux_kernel)]
fn peek_hung_up(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut byte = [0u8];
    let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    match retry(|| Ok(rustix::net::recv(socket, &mut byte, flags)?)) {
        Ok((_, 0)) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where `MSG_NOSIGNAL` does not exist, sets `SO_NOSIGPIPE` on the socket so
/// that a closed peer gives `EPIPE` instead of killing the process.
#[cfg(not(fdpass_msg_nosignal))]
pub(super) fn no_sigpipe(socket: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_nosigpipe(socket, true)?)
}

#[cfg(fdpass_msg_nosignal)]
#[inline]
pub(super) fn no_sigpipe(_socket: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}
