//! The Unix backend: one `sendmsg` and one `recvmsg` with `SCM_RIGHTS`.
//! Sends go through rustix; receives call libc's `recvmsg`/`recvmmsg`, whose
//! control data rustix then parses (see [`recv_one`] for why).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    AncillaryDrain, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketType,
};

use crate::{FdKind, Received, SocketAddress, SocketFamily, SocketInfo};

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

/// The most messages one burst call moves.
pub(crate) const BURST: usize = 64;

/// How many fds a message in a burst may bring. Linux closes the fds that
/// do not fit the buffer, so a small one is safe there; elsewhere each
/// message gets the full room of a single receive.
#[cfg(all(fdpass_recvmmsg, fdpass_linux_kernel))]
const BURST_MSG_FDS: usize = 16;
#[cfg(all(fdpass_recvmmsg, not(fdpass_linux_kernel)))]
const BURST_MSG_FDS: usize = RECV_FDS;

#[cfg(fdpass_recvmmsg)]
const BURST_MSG_SPACE: usize = rustix::cmsg_space!(ScmRights(BURST_MSG_FDS)) + 64;

// The burst receive relies on MSG_CMSG_CLOEXEC: it has no step at which to
// mark fds one by one.
#[cfg(all(fdpass_recvmmsg, not(fdpass_cmsg_cloexec)))]
compile_error!("recvmmsg is used only where MSG_CMSG_CLOEXEC exists");

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
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    data: &mut [u8],
    keep: impl FnMut(OwnedFd) -> Option<OwnedFd>,
) -> io::Result<Received> {
    recv_one(socket, data, RECV_FLAGS, keep)
}

/// A control buffer of `N` bytes, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Space<const N: usize>([MaybeUninit<u8>; N]);

impl<const N: usize> Space<N> {
    const fn new() -> Self {
        Space([MaybeUninit::uninit(); N])
    }

    /// The first `len` bytes, which the kernel wrote.
    ///
    /// # Safety
    ///
    /// The kernel must have initialised those bytes with the control data
    /// of one received message.
    unsafe fn received(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(N);
        // SAFETY: initialised, as the caller promises, and within `self`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }
}

/// One `recvmsg`, with libc rather than rustix: rustix 1.1 gives neither the
/// length of the control data nor the `SCM_PIDFD` messages in it, and
/// [`take_control`] needs both to close every fd the kernel installed.
fn recv_one(
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
        fds: 0,
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
unsafe fn take_control(
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
                    None => received.fds += 1,
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
                let marked = set_cloexec(fd);
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

/// Sends one `IO::FDPass` message (the byte `0` with one fd) per fd of
/// `fds`, at most [`BURST`] of them, and returns how many were sent.
///
/// Linux: one `sendmmsg`. Elsewhere one `sendmsg` per message; after the
/// first, an error ends the burst early and is left for the next call.
#[cfg(fdpass_sendmmsg)]
pub(crate) fn send_burst(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    use rustix::net::MMsgHdr;

    let fds = &fds[..fds.len().min(BURST)];
    let iov = [IoSlice::new(&[0])];
    let mut spaces = [[MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))]; BURST];
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
    retry(|| {
        Ok(rustix::net::sendmmsg(
            socket,
            &mut msgs[..fds.len()],
            SEND_FLAGS,
        )?)
    })
}

#[cfg(not(fdpass_sendmmsg))]
pub(crate) fn send_burst(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut sent = 0;
    for fd in fds.iter().take(BURST) {
        match send_with_fds(socket, &[0], std::slice::from_ref(fd)) {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Receives up to `bytes.len()` (at most [`BURST`]) pending messages of one
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
    use std::ptr;

    let max = bytes.len().min(got.len()).min(BURST);
    let mut spaces = [const { Space::<BURST_MSG_SPACE>::new() }; BURST];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
    // bytes (null pointers, zero lengths) are valid values.
    let mut iovs: [libc::iovec; BURST] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
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
    let received = retry(|| {
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
        unsafe { take_control(control, &mut this, |fd| keep(i, fd))? };
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
    let mut flags = RECV_FLAGS;
    let mut received = 0;
    for (i, (byte, this)) in bytes.iter_mut().zip(got).take(BURST).enumerate() {
        match recv_one(socket, std::slice::from_mut(byte), flags, |fd| keep(i, fd)) {
            Ok(r) => *this = r,
            Err(e) if received == 0 => return Err(e),
            Err(_) => break,
        }
        received += 1;
        if this.bytes == 0 && this.fds == 0 {
            break; // the end of the stream: nothing follows
        }
        flags |= RecvFlags::DONTWAIT;
    }
    Ok(received)
}

/// Runs `call` again for as long as it fails with `EINTR`.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// A libc call's result: what it returned, or errno's error for -1.
fn libc_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
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

/// Marks `fd` close-on-exec. Where `recvmsg` cannot mark fds atomically,
/// each received fd is marked this way as soon as it is seen; another
/// thread's `fork` + `exec` between the two calls can still inherit it: the
/// documented gap of these systems.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
    let flags = fcntl_getfd(fd)?;
    Ok(fcntl_setfd(fd, flags | FdFlags::CLOEXEC)?)
}

/// Whether fd number `fd` is open in this process. A raw call, since a
/// number that may not be open cannot be borrowed as an fd.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the flags of whatever `fd` names, if
    // anything; it takes no pointers.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The id of this process's pidfd, which tells it apart from any earlier
/// process of the same pid (systemd's `LISTEN_PIDFDID`): the inode number
/// of a pidfd on pidfs (Linux 6.9 and later). `None` where there is none.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    /// `PID_FS_MAGIC` from `<linux/magic.h>`.
    const PID_FS_MAGIC: i64 = 0x5049_4446;

    let pidfd = super::pidfd_open(std::process::id()).ok()?;
    let fs = rustix::fs::fstatfs(&pidfd).ok()?;
    #[allow(clippy::unnecessary_cast, clippy::cast_lossless)] // its type varies
    if fs.f_type as i64 != PID_FS_MAGIC {
        return None;
    }
    Some(rustix::fs::fstat(&pidfd).ok()?.st_ino)
}

#[cfg(not(fdpass_linux_kernel))]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    None
}

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
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
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

/// Sends `data` with `fds` attached in one datagram, from a new unbound
/// datagram socket, to the unix socket at `address`: a path, or on Linux
/// `@name` for a name in the abstract namespace.
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
            SEND_FLAGS,
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

/// The credentials of the peer of a unix socket: uid, gid, and the pid
/// where the OS tells it.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    let pid = cred.pid.as_raw_nonzero().get().try_into().ok();
    Ok((cred.uid.as_raw(), cred.gid.as_raw(), pid))
}

/// illumos and Solaris: `getpeerucred`, which rustix does not bind.
#[cfg(fdpass_solarish)]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let mut cred: *mut libc::ucred_t = std::ptr::null_mut();
    // SAFETY: `cred` receives a ucred that this function frees.
    if unsafe { libc::getpeerucred(socket.as_raw_fd(), &mut cred) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `cred` is the valid ucred just returned; it is freed once
    // and not used after.
    let (uid, gid, pid) = unsafe {
        let ids = (
            libc::ucred_geteuid(cred),
            libc::ucred_getegid(cred),
            libc::ucred_getpid(cred),
        );
        libc::ucred_free(cred);
        ids
    };
    // The credentials may lack an id: -1 stands in for it.
    if uid == libc::uid_t::MAX || gid == libc::gid_t::MAX {
        return Err(io::Error::other(
            "the peer's credentials carry no uid or gid",
        ));
    }
    Ok((uid, gid, u32::try_from(pid).ok()))
}

/// macOS, the BSDs and the other Unixes: `getpeereid`, which rustix does
/// not bind; it gives no pid.
#[cfg(not(any(fdpass_linux_kernel, fdpass_solarish)))]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: `uid` and `gid` are writable for the call.
    if unsafe { libc::getpeereid(socket.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((uid, gid, None))
}

/// A pidfd for the peer of a unix socket (`SO_PEERPIDFD`, Linux 6.5 and
/// later): the process that connected, which a reused pid cannot stand in
/// for. `None` where the kernel has none.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn peer_pidfd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    use std::os::fd::FromRawFd;
    /// `SO_PEERPIDFD` from `<asm-generic/socket.h>`; not in the libc crate
    /// for every architecture.
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is writable for `len` bytes, an int as the option is.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            std::ptr::from_mut(&mut fd).cast(),
            &raw mut len,
        )
    };
    if got != 0 {
        let err = io::Error::last_os_error();
        // ESRCH: the peer has exited, and no pidfd can name it.
        return match err.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::ESRCH) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: the kernel opened this pidfd for this process; only this
    // value owns it.
    Ok((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(not(fdpass_linux_kernel))]
pub(crate) fn peer_pidfd(_socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    Ok(None)
}

/// A program to start with fds laid out by the socket-activation
/// convention: `fds` as 3, 4, …, and `LISTEN_FDS`, `LISTEN_PID` (its own
/// pid), `LISTEN_FDNAMES` (`names`) and `NOTIFY_SOCKET` set; the other
/// variables are this process's.
pub(crate) struct Spawn<'a> {
    pub(crate) program: &'a std::path::Path,
    pub(crate) args: &'a [std::ffi::OsString],
    pub(crate) fds: &'a [BorrowedFd<'a>],
    pub(crate) names: &'a str,
    pub(crate) notify_socket: &'a std::ffi::OsStr,
}

impl Spawn<'_> {
    /// Forks and execs the program, and returns its pid once the exec has
    /// succeeded.
    ///
    /// `std::process::Command` cannot do this: `LISTEN_PID` must be the
    /// child's own pid, which is known only after the fork, and a variable
    /// cannot be set between fork and exec without allocating. Here every
    /// string is made before the fork, with room for the pid's digits.
    pub(crate) fn start(&self) -> io::Result<u32> {
        use std::ffi::CString;
        use std::os::unix::ffi::{OsStrExt, OsStringExt};

        let c_string = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a program, argument or variable holds a NUL byte",
                )
            })
        };
        let program = c_string(self.program.as_os_str().as_bytes().to_vec())?;
        let mut argv = vec![program.clone()];
        for arg in self.args {
            argv.push(c_string(arg.as_bytes().to_vec())?);
        }
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            // The convention's variables and NOTIFY_SOCKET come from here.
            let replaced = crate::activation::VARIABLES
                .iter()
                .chain(&["NOTIFY_SOCKET"]);
            if replaced.into_iter().any(|name| key == *name) {
                continue;
            }
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            env.push(c_string(pair)?);
        }
        env.push(c_string(
            format!("LISTEN_FDS={}", self.fds.len()).into_bytes(),
        )?);
        env.push(c_string(
            format!("LISTEN_FDNAMES={}", self.names).into_bytes(),
        )?);
        let mut notify = b"NOTIFY_SOCKET=".to_vec();
        notify.extend_from_slice(self.notify_socket.as_bytes());
        env.push(c_string(notify)?);
        // "LISTEN_PID=", then the child writes its pid's digits and a NUL.
        let mut pid_var = [0u8; 32];
        pid_var[..11].copy_from_slice(b"LISTEN_PID=");
        let pid_var = pid_var.as_mut_ptr();

        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|v| v.as_ptr()).collect();
        env_ptrs.push(pid_var.cast_const().cast());
        env_ptrs.push(std::ptr::null());
        if self.fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_FDS} fds go to a started program"),
            ));
        }
        let sources: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let (report, reporter) = cloexec_pipe()?;
        let child = Child {
            program: program.as_ptr(),
            argv: argv_ptrs.as_ptr(),
            env: env_ptrs.as_ptr(),
            pid_var,
            sources: &sources,
            reporter: reporter.as_raw_fd(),
        };

        // SAFETY: the child runs only `Child::exec`, which makes only
        // async-signal-safe calls on memory prepared here, and never
        // returns.
        let pid = match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            // SAFETY: this is the child of the fork, and every pointer in
            // `child` points into memory the fork copied.
            0 => unsafe { child.exec() },
            pid => pid,
        };
        drop(reporter);
        let mut errno = [0u8; 4];
        let read = retry(|| Ok(rustix::io::read(&report, &mut errno)?))?;
        let pid = u32::try_from(pid).unwrap_or_default();
        if read == 0 {
            return Ok(pid); // the exec closed the close-on-exec pipe
        }
        kill_and_reap(pid);
        let err = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        Err(io::Error::new(
            err.kind(),
            format!("cannot start {}: {err}", self.program.display()),
        ))
    }
}

/// A pipe whose ends are close-on-exec: atomically where the OS has
/// `pipe2`.
#[cfg(not(fdpass_apple))]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Apple systems have no `pipe2`: the ends are marked right after; a
/// `fork` + `exec` in another thread meanwhile may inherit them.
#[cfg(fdpass_apple)]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe()?;
    set_cloexec(read.as_fd())?;
    set_cloexec(write.as_fd())?;
    Ok((read, write))
}

/// What the child of [`Spawn::start`] needs between fork and exec, all
/// made before the fork.
struct Child<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    /// `LISTEN_PID=` and room for the digits and a NUL, zeroed.
    pid_var: *mut u8,
    sources: &'a [RawFd],
    /// The write end of a close-on-exec pipe, for the exec's errno.
    reporter: RawFd,
}

impl Child<'_> {
    /// Lays out the fds, writes the pid, clears the signal mask and execs;
    /// on a failure writes errno to `reporter` and exits with 127.
    ///
    /// # Safety
    ///
    /// Only in the child of a `fork`, with every pointer valid (the memory
    /// of the parent, copied by the fork).
    unsafe fn exec(&self) -> ! {
        // SAFETY: as this function's contract says; every call below is
        // async-signal-safe, and nothing allocates.
        unsafe {
            write_decimal(self.pid_var.add(11), libc::getpid().unsigned_abs());
            let count = self.sources.len() as RawFd;
            // Each fd first above the targets, so that no target is the
            // source of a later move, then onto its place; dup2 leaves the
            // copy without close-on-exec, and the move has it.
            let mut moved = [0 as RawFd; MAX_FDS];
            for (i, &fd) in self.sources.iter().enumerate() {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + count);
                if moved[i] < 0 {
                    self.fail();
                }
            }
            for (i, &fd) in moved[..self.sources.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    self.fail();
                }
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const mask, std::ptr::null_mut());
            // As std's Command does: the Rust runtime ignores SIGPIPE, and
            // the ignoring would be inherited.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(self.program, self.argv, self.env);
            self.fail()
        }
    }

    /// Reports errno to the parent and exits.
    ///
    /// # Safety
    ///
    /// As [`Child::exec`]: only in the child of a `fork`.
    unsafe fn fail(&self) -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY: `reporter` is open in the child; four bytes from a local.
        unsafe {
            libc::write(self.reporter, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        }
    }
}

/// Writes the decimal digits of `n` at `at`, followed by a NUL.
///
/// # Safety
///
/// `at` must be valid for 11 bytes of writes.
unsafe fn write_decimal(at: *mut u8, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        // SAFETY: within the 11 bytes the caller promises.
        unsafe { at.add(i).write(*digit) };
    }
    // SAFETY: as above.
    unsafe { at.add(len).write(0) };
}

/// How the child `pid` ended, if it has: "exited with status N" or "was
/// killed by signal N". Reaps it.
pub(crate) fn exit_status(pid: u32) -> io::Result<Option<String>> {
    use rustix::process::{waitpid, Pid, WaitOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let Some((_, status)) = retry(|| Ok(waitpid(Some(pid), WaitOptions::NOHANG)?))? else {
        return Ok(None);
    };
    Ok(Some(
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".to_owned(),
        },
    ))
}

/// Kills the child `pid` and waits for it to be gone.
pub(crate) fn kill_and_reap(pid: u32) {
    use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = kill_process(pid, Signal::KILL);
    let _ = retry(|| Ok(waitpid(Some(pid), WaitOptions::empty())?));
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

/// `SO_PASSRIGHTS` (Linux 6.16 and later); not in the libc crate yet.
#[cfg(fdpass_passrights)]
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes the kernel refuse fds sent to `socket` (`SO_PASSRIGHTS` off), so
/// that a peer cannot fill this process's fd table through it. Returns
/// whether the kernel has the option.
#[cfg(fdpass_passrights)]
pub(crate) fn refuse_fds(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let off: libc::c_int = 0;
    // SAFETY: setsockopt reads an int from `off`, whose size is passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&raw const off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOPROTOOPT) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(fdpass_passrights))]
pub(crate) fn refuse_fds(_socket: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(false)
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
