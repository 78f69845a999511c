//! Failures: a message for a person and an exit code (the BSD `sysexits`
//! convention, which service managers and shell scripts already know).

use std::fmt;
use std::io::{self, ErrorKind};

use io_fdpass::holder::protocol::RefusalKind;

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
/// A system call failed, or the OS lacks what the command needs (on
/// Windows: `send`, `recv`, `adopt` and `fds`, and `AF_UNIX` for a
/// holder's path before Windows 10 1803).
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
/// (another user, or a limit reached) or by `fdpass recv` (another user),
/// or by the kernel: another process's fds.
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
       Linux 5.6); on Windows, send, recv, adopt and fds, which it cannot
       do, and a holder's path where Windows has no AF_UNIX (before 10 1803)
  73   the socket path is taken (by a file, or by a live socket)
  74   stdout or stderr could not be written (closed, or full)
  75   timed out: the peer did not answer within --timeout
  76   the peer broke the protocol: it is not an fdpass holder, or answered
       with something this version does not know
  77   not permitted: the peer runs as a user not trusted (nothing was
       sent), the holder refused (another user, or a limit reached), or
       for send, the receiver refused this user; for adopt and fds, not
       permitted to take or list another process's fds
  126  the command could not be run
  127  the command was not found";

/// Whom an error speaks of, which decides what its kind means for the exit
/// status: `InvalidData` from a holder is a broken protocol (76), from a
/// peer that passes fds something malformed (65).
// On Windows no command reads another process's fds or speaks to a
// plain peer.
#[cfg_attr(windows, allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// This process's own system calls: files, listening sockets, signals.
    System,
    /// A running process whose fds are read or copied (`adopt`, `fds`).
    Process,
    /// The peer of `send` or `recv`, which passes fds and speaks no
    /// protocol.
    Peer,
    /// An fdpass holder, and what listens at its socket.
    Holder,
}

/// The exit status for an error of `kind` from `party`: the one table of
/// [`TABLE`]'s codes for `io::Error`s. (A holder's refusals have theirs,
/// [`refusal_code`].)
pub fn code(kind: ErrorKind, party: Party) -> u8 {
    use ErrorKind as K;
    use Party as P;
    match (kind, party) {
        (K::PermissionDenied, _) => NO_PERMISSION,
        (K::NotFound, P::Process) => NO_INPUT,
        (K::NotFound | K::ConnectionRefused, P::Peer | P::Holder) => UNAVAILABLE,
        (K::TimedOut | K::WouldBlock, P::Peer | P::Holder) => TIMED_OUT,
        (K::InvalidData | K::UnexpectedEof, P::Holder) => PROTOCOL,
        (K::InvalidData | K::UnexpectedEof, P::System | P::Peer) => DATA,
        (K::InvalidInput, P::Process | P::Holder) => USAGE,
        _ => OS,
    }
}

/// The exit status for a holder's refusal of `kind`.
pub fn refusal_code(kind: RefusalKind) -> u8 {
    match kind {
        RefusalKind::NotFound => NO_INPUT,
        RefusalKind::Denied | RefusalKind::Full => NO_PERMISSION,
        RefusalKind::Invalid => DATA,
        _ => OS,
    }
}

/// What went wrong, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

#[cfg_attr(windows, allow(dead_code))]
impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The exit status of a command that fdpass ran and waited for (on
    /// Windows, where it cannot take the command's place): passed on as
    /// it is, with no message, as an exec would; an exit code above 255
    /// becomes 255.
    #[cfg(windows)]
    pub fn exited(status: std::process::ExitStatus) -> Self {
        let code = status
            .code()
            .map_or(255, |code| u8::try_from(code).unwrap_or(255));
        Failure::new(code, "")
    }

    /// An OS error while doing `what`.
    pub fn os(what: impl fmt::Display, err: io::Error) -> Self {
        Failure::new(code(err.kind(), Party::System), format!("{what}: {err}"))
    }

    /// An error while doing `what` with the peer of `send` or `recv`.
    pub fn peer(what: impl fmt::Display, err: io::Error) -> Self {
        Failure::new(code(err.kind(), Party::Peer), format!("{what}: {err}"))
    }

    /// An error of the library's `process` module, whose message says
    /// all: the process, the fd, and what to do.
    pub fn process(err: io::Error) -> Self {
        Failure::new(code(err.kind(), Party::Process), err.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// The refusal of a command that Windows cannot do, and why.
#[cfg(windows)]
pub fn not_on_windows(command: &str, why: &str) -> Failure {
    Failure::new(
        OS,
        format!("fdpass {command} does not run on Windows: {why}; listen, hold, store, fetch, list and drop do"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTIES: [Party; 4] = [Party::System, Party::Process, Party::Peer, Party::Holder];

    /// Every kind the table names, and one it does not.
    const KINDS: [ErrorKind; 10] = [
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::ConnectionRefused,
        ErrorKind::TimedOut,
        ErrorKind::WouldBlock,
        ErrorKind::InvalidData,
        ErrorKind::UnexpectedEof,
        ErrorKind::InvalidInput,
        ErrorKind::Unsupported,
        ErrorKind::AddrInUse,
    ];

    /// The codes `--help` lists.
    fn documented() -> Vec<u8> {
        TABLE
            .lines()
            .filter_map(|line| line.trim_start().split(' ').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn every_code_is_in_the_help_table() {
        let documented = documented();
        assert!(documented.contains(&OK) && documented.contains(&NOT_FOUND));
        for party in PARTIES {
            for kind in KINDS {
                let code = code(kind, party);
                assert!(documented.contains(&code), "{kind:?} {party:?}: {code}");
            }
        }
        for kind in [
            RefusalKind::NotFound,
            RefusalKind::Denied,
            RefusalKind::Full,
            RefusalKind::Invalid,
            RefusalKind::Failed,
        ] {
            assert!(documented.contains(&refusal_code(kind)), "{kind:?}");
        }
    }

    #[test]
    fn the_codes_say_what_the_help_table_says() {
        use ErrorKind as K;
        // 65: a peer sent something malformed; 76: a holder broke the
        // protocol.
        assert_eq!(code(K::InvalidData, Party::Peer), DATA);
        assert_eq!(code(K::UnexpectedEof, Party::Peer), DATA);
        assert_eq!(code(K::InvalidData, Party::Holder), PROTOCOL);
        assert_eq!(code(K::UnexpectedEof, Party::Holder), PROTOCOL);
        // 66: no such process or fd; 69: nothing listens.
        assert_eq!(code(K::NotFound, Party::Process), NO_INPUT);
        assert_eq!(code(K::NotFound, Party::Holder), UNAVAILABLE);
        assert_eq!(code(K::ConnectionRefused, Party::Peer), UNAVAILABLE);
        // 75: the peer did not answer in time.
        assert_eq!(code(K::TimedOut, Party::Holder), TIMED_OUT);
        assert_eq!(code(K::WouldBlock, Party::Peer), TIMED_OUT);
        // 77: not permitted, whoever said so.
        for party in PARTIES {
            assert_eq!(code(K::PermissionDenied, party), NO_PERMISSION);
        }
        // 64: a name or pid the library refused before doing anything.
        assert_eq!(code(K::InvalidInput, Party::Holder), USAGE);
        assert_eq!(code(K::InvalidInput, Party::Process), USAGE);
        // 71: the rest.
        assert_eq!(code(K::NotFound, Party::System), OS);
        assert_eq!(code(K::TimedOut, Party::System), OS);
        assert_eq!(code(K::InvalidData, Party::Process), OS);
        assert_eq!(code(K::Unsupported, Party::Holder), OS);
        assert_eq!(refusal_code(RefusalKind::NotFound), NO_INPUT);
        assert_eq!(refusal_code(RefusalKind::Full), NO_PERMISSION);
    }
}
