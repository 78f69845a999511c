//! The Unix backend, one file per job: `msg.rs` sends and receives one
//! message with `SCM_RIGHTS`, `burst.rs` many (`sendmmsg`/`recvmmsg`),
//! `socket.rs` makes the sockets this crate connects or sends from,
//! `describe.rs` says what an fd of this process is, `cred.rs` who a peer
//! or this process is, `anon.rs` makes files with no name, and `spawn.rs`
//! starts a program with fds laid out by the socket-activation convention.
//! Sends go through rustix; receives call libc's `recvmsg`/`recvmmsg`,
//! whose control data rustix then parses (see `msg.rs` for why).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

mod anon;
mod burst;
mod cred;
mod datagram;
mod describe;
mod msg;
mod socket;
mod spawn;

pub(crate) use self::anon::*;
pub(crate) use self::burst::*;
pub(crate) use self::cred::*;
pub(crate) use self::datagram::*;
pub(crate) use self::describe::*;
pub(crate) use self::msg::*;
pub(crate) use self::socket::*;
pub(crate) use self::spawn::*;

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
