//! Failures: a message for a person and an exit code (the BSD `sysexits`
//! convention, which service managers and shell scripts already know).

use std::fmt;
use std::io::{self, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// The command line was wrong; nothing was created.
pub const USAGE: u8 = 64;
/// A peer sent something that is not what was asked for.
pub const DATA: u8 = 65;
/// An fd number that is not open, a name the holder does not hold, or
/// another process, fd or listening socket that is not there.
pub const NO_INPUT: u8 = 66;
/// No peer at the socket: nothing listening, or the holder is not running.
pub const UNAVAILABLE: u8 = 69;
/// A system call failed.
pub const OS: u8 = 71;
/// A socket could not be created: its path is taken.
pub const CANT_CREATE: u8 = 73;
/// stdout or stderr could not be written: closed, or full.
pub const IO: u8 = 74;
/// A peer took longer than the timeout.
pub const TIMED_OUT: u8 = 75;
/// A peer broke the protocol: not an fdpass holder, or a holder of another
/// version.
pub const PROTOCOL: u8 = 76;
/// Not permitted: a peer of a user not trusted, a refusal by the holder
/// (another user, or a limit reached), or by the kernel: another
/// process's fds.
pub const NO_PERMISSION: u8 = 77;
/// The command was found but could not be run.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// The table printed under `--help`.
pub const TABLE: &str = "\
Exit status:
  0    success
  64   usage error (nothing was created)
  65   a peer sent something malformed
  66   an fd that is not open, or a name the holder does not hold; for adopt
       and fds, no such process, fd, or socket listening at the address
  69   no peer: nothing listens at the socket, or the holder is not running
  71   a system call failed, or the kernel lacks it (adopt: pidfd_getfd,
       Linux 5.6)
  73   the socket path is taken (by a file, or by a live socket)
  74   stdout or stderr could not be written (closed, or full)
  75   timed out: the peer did not answer within --timeout
  76   the peer broke the protocol: it is not an fdpass holder, or answered
       with something this version does not know
  77   not permitted: the peer runs as a user not trusted (nothing was
       sent), or the holder refused (another user, or a limit reached);
       for adopt and fds, not permitted to take or list another process's
       fds
  126  the command could not be run
  127  the command was not found";

/// What went wrong, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// An OS error while doing `what`.
    pub fn os(what: impl fmt::Display, err: io::Error) -> Self {
        let code = match err.kind() {
            ErrorKind::InvalidData | ErrorKind::UnexpectedEof => DATA,
            ErrorKind::PermissionDenied => NO_PERMISSION,
            _ => OS,
        };
        Failure::new(code, format!("{what}: {err}"))
    }
}

impl Failure {
    /// An error of the library's `process` module, whose message says
    /// all: the process, the fd, and what to do.
    pub fn process(err: io::Error) -> Self {
        let code = match err.kind() {
            ErrorKind::NotFound => NO_INPUT,
            ErrorKind::PermissionDenied => NO_PERMISSION,
            ErrorKind::InvalidInput => USAGE,
            _ => OS,
        };
        Failure::new(code, err.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;
