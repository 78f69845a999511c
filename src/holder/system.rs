//! The OS's answers to a [`Holder`](super::Holder)'s questions, on Unix.

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;

use super::machine::Os;
use super::protocol::Entry;
use crate::FdKind;

/// The [`Os`] of a holder of `OwnedFd`s on Unix: [`FdKind::of`] describes
/// an fd, `dup` (`F_DUPFD_CLOEXEC`) copies it, and `kill(pid, 0)` tells
/// whether a process exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Os for System {
    type Fd = OwnedFd;

    fn describe(&self, name: &str, fd: &OwnedFd) -> Entry {
        match FdKind::of(fd) {
            Ok(kind) => Entry::describe(name, &kind),
            Err(_) => Entry::describe(name, &FdKind::Other(None)),
        }
    }

    fn duplicate(&self, fd: &OwnedFd) -> io::Result<OwnedFd> {
        fd.try_clone().map_err(|err| {
            if err.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) {
                io::Error::new(ErrorKind::QuotaExceeded, err)
            } else {
                err
            }
        })
    }

    fn alive(&self, pid: u32) -> bool {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    }
}
