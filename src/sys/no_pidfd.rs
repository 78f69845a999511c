//! Another process's fds where the system has no pidfds: every call fails
//! with `Unsupported`, saying why.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use crate::FdKind;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "taking another process's fds needs pidfd_getfd, which only Linux (5.6 and later) \
         and Android have",
    )
}

pub(crate) fn pidfd_open(_pid: u32) -> io::Result<OwnedFd> {
    Err(unsupported())
}

pub(crate) fn pidfd_getfd(_pidfd: BorrowedFd<'_>, _pid: u32, _fd: RawFd) -> io::Result<OwnedFd> {
    Err(unsupported())
}

pub(crate) fn pidfd_exited(_pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    Err(unsupported())
}

pub(crate) fn pidfd_terminate(_pidfd: BorrowedFd<'_>, _pid: u32) -> io::Result<()> {
    Err(unsupported())
}

pub(crate) fn process_fds(_pidfd: BorrowedFd<'_>, _pid: u32) -> io::Result<Vec<(RawFd, FdKind)>> {
    Err(unsupported())
}
