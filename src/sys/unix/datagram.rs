//! A datagram with its sender's pid, where the OS says it: what a notify
//! listener reads.

use std::io;
use std::os::fd::BorrowedFd;

/// What [`recv_datagram`] read.
pub(crate) struct Datagram {
    pub(crate) bytes: usize,
    pub(crate) truncated: bool,
    pub(crate) pid: Option<u32>,
}

/// One datagram from the non-blocking `socket`, with its sender's pid.
///
/// The control buffer has room for the credentials and no more: the kernel
/// installs none of the fds a sender attached where `SO_PASSRIGHTS` could
/// not refuse them ("the excess file descriptors are automatically
/// closed", unix(7)); any that came all the same are closed here.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn recv_datagram(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    use std::os::fd::AsRawFd;
    const UCRED: usize = size_of::<libc::ucred>();
    // SAFETY: CMSG_SPACE only computes a size.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(UCRED as u32) } as usize;
    let mut space = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC;
    let bytes = loop {
        // SAFETY: `msg` points at `buf` and `space`, alive and unaliased
        // for the call, with their lengths; the kernel writes within them.
        let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, flags) };
        match usize::try_from(got) {
            Ok(bytes) => break bytes,
            Err(_) => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => {}
                e => return Err(e),
            },
        }
    };
    // SAFETY: `msg` describes the control data the kernel just wrote.
    let pid = unsafe { sender_closing_fds(&msg) };
    Ok(Datagram {
        bytes: bytes.min(buf.len()),
        truncated: bytes > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0,
        pid,
    })
}

/// The sender's pid in the control data `msg` describes, from its
/// `SCM_CREDENTIALS`; closes the fds of any `SCM_RIGHTS` in it.
///
/// # Safety
///
/// `msg` must describe the control data of a message `recvmsg` has just
/// received, whose fds no one else owns.
#[cfg(fdpass_linux_kernel)]
unsafe fn sender_closing_fds(msg: &libc::msghdr) -> Option<u32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut pid = None;
    // SAFETY: `msg` describes control data, as the caller promises.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !header.is_null() {
        // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR return either null or a
        // whole header within the control data.
        let (level, kind, len) = unsafe {
            (
                (*header).cmsg_level,
                (*header).cmsg_type,
                (*header).cmsg_len,
            )
        };
        // SAFETY: as above; the data follows the header.
        let data = unsafe { libc::CMSG_DATA(header) };
        #[allow(clippy::unnecessary_cast)] // a socklen_t on musl
        let data_len = (len as usize).saturating_sub(data as usize - header as usize);
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if data_len >= size_of::<libc::ucred>() => {
                // SAFETY: the message holds a whole ucred, maybe unaligned.
                let cred = unsafe { data.cast::<libc::ucred>().read_unaligned() };
                pid = u32::try_from(cred.pid).ok().filter(|&pid| pid != 0);
            }
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..data_len / size_of::<libc::c_int>() {
                    // SAFETY: within the message's data; each is an fd the
                    // kernel installed for this process, owned by no one.
                    drop(unsafe {
                        OwnedFd::from_raw_fd(data.cast::<libc::c_int>().add(i).read_unaligned())
                    });
                }
            }
            _ => {}
        }
        // SAFETY: `header` is a header of the control data `msg` describes.
        header = unsafe { libc::CMSG_NXTHDR(msg, header) };
    }
    pid
}

/// Elsewhere the OS gives no sender's pid with a datagram: the crate's own
/// receive, which closes every fd that came.
#[cfg(not(fdpass_linux_kernel))]
pub(crate) fn recv_datagram(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    let got = super::recv_fds(socket, buf, Some)?;
    Ok(Datagram {
        bytes: got.bytes,
        truncated: got.data_truncated,
        pid: None,
    })
}
