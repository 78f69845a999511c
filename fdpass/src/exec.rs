//! The fds of this process named on the command line, and running a command
//! with fds laid out by the socket-activation convention.

#[cfg(unix)]
use std::ffi::{OsStr, OsString};
#[cfg(unix)]
use std::io::ErrorKind;
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
#[cfg(unix)]
use std::path::{Path, PathBuf};

#[cfg(unix)]
use io_fdpass::activation::{find_program, Command};
#[cfg(unix)]
use rustix::io::{fcntl_setfd, FdFlags};

use crate::fail::{self, Failure, Result};

/// An fd of this process that the user named on the command line as one
/// inherited from the shell, checked open when it was named. It lends the
/// fd for no longer than it lives itself, and never closes it: the fd may
/// be one of 0–2, which the process goes on using.
#[cfg(unix)]
#[derive(Debug)]
pub struct Inherited(RawFd);

/// Checks that fd `fd` of this process is open and inherited, not std's
/// stand-in for a standard fd the shell had closed.
#[cfg(unix)]
pub fn inherited(fd: RawFd) -> Result<Inherited> {
    if fd < 0 {
        return Err(Failure::new(
            fail::USAGE,
            format!("{fd} is not an fd number"),
        ));
    }
    let not_open = || {
        Failure::new(
            fail::NO_INPUT,
            format!("fd {fd} is not open in this process: open it in the shell, e.g. `{fd}<file`"),
        )
    };
    // A standard fd closed at start holds std's /dev/null, not the
    // shell's fd.
    if crate::output::closed_at_start(fd) {
        return Err(not_open());
    }
    // Not rustix's `fcntl_getfd`, which takes a `BorrowedFd`: a number
    // that may not be open cannot be borrowed.
    // SAFETY: F_GETFD takes no pointers; it only reads the flags of
    // whatever `fd` names, if anything.
    match unsafe { libc::fcntl(fd, libc::F_GETFD) } {
        -1 => Err(not_open()),
        _ => Ok(Inherited(fd)),
    }
}

#[cfg(unix)]
impl AsFd for Inherited {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `inherited` checked with F_GETFD that the fd was open
        // when this value was made. It stays open while this value lives,
        // for which the borrow is lent: this process never closes an fd it
        // did not open itself (the shell's are closed only by its exit or
        // exec), and no fd it opens itself can have this number, since the
        // number was taken when it opened it.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

#[cfg(unix)]
impl AsRawFd for Inherited {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// `given` names, and `default(i)` for each fd `i` not named.
pub fn fd_names(
    given: Vec<String>,
    fds: usize,
    default: impl Fn(usize) -> &'static str,
) -> Result<Vec<String>> {
    if given.len() > fds {
        return Err(Failure::new(
            fail::USAGE,
            format!("{} names given for {fds} fd(s)", given.len()),
        ));
    }
    for name in &given {
        io_fdpass::notify::check_name(name)
            .map_err(|err| Failure::new(fail::USAGE, err.to_string()))?;
    }
    let named = given.len();
    Ok(given
        .into_iter()
        .chain((named..fds).map(|i| default(i).to_owned()))
        .collect())
}

/// Finds the program `name` names, as the shell does
/// (`io_fdpass::activation::find_program`): 127 when there is none, 126
/// when it cannot be run.
#[cfg(unix)]
pub fn find(name: &OsStr) -> Result<PathBuf> {
    find_program(name).map_err(|err| match err.kind() {
        ErrorKind::PermissionDenied => Failure::new(
            fail::CANNOT_EXECUTE,
            format!("cannot run {}: {err}", name.to_string_lossy()),
        ),
        _ => Failure::new(
            fail::NOT_FOUND,
            format!(
                "command not found: {} (no such file, or not in PATH)",
                name.to_string_lossy()
            ),
        ),
    })
}

/// Replaces this process with `command`, giving it `fds` as fds 3, 4, …
/// with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` set (the systemd
/// socket-activation convention, laid out by
/// `io_fdpass::activation::Command::exec`), and the variables of `env`.
/// The command inherits no other fd but 0–2, and not those of 0–2 that the
/// shell had closed. `fds` must be all that the caller still holds above
/// 2: the numbers 3, 4, … are taken over whatever they hold. Returns only
/// on failure.
#[cfg(unix)]
pub fn exec_with_fds(
    fds: Vec<OwnedFd>,
    names: &[String],
    program: &Path,
    command: &[OsString],
    env: &[(&str, &OsStr)],
) -> Failure {
    if let Err(err) = close_standard_fds_closed_at_start() {
        return Failure::os("cannot arrange the fds for the command", err);
    }
    let run = match command_with_fds(&fds, names, program, command, env) {
        Ok(run) => run,
        Err(failure) => return failure,
    };
    let err = run.exec();
    match err.kind() {
        ErrorKind::PermissionDenied => {
            Failure::new(fail::CANNOT_EXECUTE, format!("{err} (is it executable?)"))
        }
        ErrorKind::NotFound => Failure::new(fail::NOT_FOUND, err.to_string()),
        _ => Failure::new(fail::CANNOT_EXECUTE, err.to_string()),
    }
}

/// Checks what can be checked before [`exec_with_fds`] runs `command`
/// with `fds`, where nothing is lost yet: the names, the program, and that
/// this process has room to lay the fds out by the library's rule
/// (`io_fdpass::activation::Command::check`, the rule its `exec` keeps).
#[cfg(unix)]
pub fn check_with_fds(
    fds: &[OwnedFd],
    names: &[String],
    program: &Path,
    command: &[OsString],
    env: &[(&str, &OsStr)],
) -> Result<()> {
    let run = command_with_fds(fds, names, program, command, env)?;
    run.check().map_err(|err| match err.kind() {
        ErrorKind::NotFound => Failure::new(fail::NOT_FOUND, err.to_string()),
        ErrorKind::PermissionDenied => Failure::new(fail::CANNOT_EXECUTE, err.to_string()),
        // The room for the fds (its message names the open-file limit),
        // or an argument the exec could not pass.
        _ => Failure::new(
            fail::OS,
            format!("cannot run the command with the fds: {err}"),
        ),
    })
}

/// `command` with `fds` named by `names`, and the variables of `env`.
#[cfg(unix)]
fn command_with_fds<'a>(
    fds: &'a [OwnedFd],
    names: &[String],
    program: &Path,
    command: &'a [OsString],
    env: &[(&str, &OsStr)],
) -> Result<Command<'a>> {
    let mut run = Command::new(program).arg0(&command[0]).args(&command[1..]);
    for (name, fd) in names.iter().zip(fds) {
        run = run
            .fd(name, fd)
            .map_err(|err| Failure::new(fail::USAGE, err.to_string()))?;
    }
    for (key, value) in env {
        run = run.env(key, value);
    }
    Ok(run)
}

/// Marks close-on-exec each of fds 0–2 that the shell had closed, where
/// std opened /dev/null in its place, so that the command finds it closed
/// too.
#[cfg(unix)]
pub fn close_standard_fds_closed_at_start() -> std::io::Result<()> {
    for fd in (0..=2).filter(|&fd| crate::output::closed_at_start(fd)) {
        // SAFETY: std opened /dev/null at `fd`, which it keeps open for
        // the life of the process; only its flags are changed.
        fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC)?;
    }
    Ok(())
}

/// Runs `command` with `sockets` named by `names`, handed over by the
/// protocol of `io_fdpass::activation` on Windows (systemfd's, with
/// `LISTEN_FDS` and `LISTEN_FDNAMES` beside it), and waits for it: its exit
/// status, as a [`Failure`] with no message, passed on. Windows has no
/// exec: fdpass stays, as the command's parent. `handed_over` runs once the
/// command has its sockets (or has ended without asking for them): a
/// take's commit; its failure ends the command.
#[cfg(windows)]
pub fn run_with_sockets(
    sockets: &[impl std::os::windows::io::AsSocket],
    names: &[String],
    command: &[std::ffi::OsString],
    handed_over: impl FnOnce(std::io::Result<()>) -> Result<()>,
) -> Failure {
    let mut run = io_fdpass::activation::Command::new(&command[0]).args(&command[1..]);
    for (name, socket) in names.iter().zip(sockets) {
        run = match run.fd(name, socket) {
            Ok(run) => run,
            Err(err) => return Failure::new(fail::USAGE, err.to_string()),
        };
    }
    let mut child = match run.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Failure::new(fail::NOT_FOUND, format!("command not found: {err}"))
        }
        Err(err) => return Failure::new(fail::CANNOT_EXECUTE, err.to_string()),
    };
    if let Err(failure) = handed_over(child.wait_handover()) {
        let _ = child.kill();
        let _ = child.wait();
        return failure;
    }
    match child.wait() {
        Ok(status) => Failure::exited(status),
        Err(err) => Failure::os(
            format!("cannot wait for {}", command[0].to_string_lossy()),
            err,
        ),
    }
}
