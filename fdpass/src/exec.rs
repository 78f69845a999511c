//! The fds of this process named on the command line, and running a command
//! with fds laid out by the socket-activation convention.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::io::{fcntl_dupfd_cloexec, fcntl_getfd, fcntl_setfd, FdFlags};

use crate::fail::{self, Failure, Result};

/// The first fd a socket-activated command gets (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// Borrows fd `fd` of this process, which the user named on the command
/// line as one inherited from the shell, after checking it is open.
pub fn inherited(fd: RawFd) -> Result<BorrowedFd<'static>> {
    if fd < 0 {
        return Err(Failure::new(
            fail::USAGE,
            format!("{fd} is not an fd number"),
        ));
    }
    // SAFETY: `fd` is only used for the fcntl that checks it is open before
    // anything else is done with it. This process opens nothing on its own
    // before it uses the fds named on its command line, so an open fd with
    // this number is the one the shell passed, and it stays open until the
    // process exits or execs.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    // A standard fd closed at start holds std's /dev/null, not the
    // shell's fd.
    match fcntl_getfd(borrowed) {
        Ok(_) if !crate::output::closed_at_start(fd) => Ok(borrowed),
        _ => Err(Failure::new(
            fail::NO_INPUT,
            format!("fd {fd} is not open in this process: open it in the shell, e.g. `{fd}<file`"),
        )),
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
    let named = given.len();
    Ok(given
        .into_iter()
        .chain((named..fds).map(|i| default(i).to_owned()))
        .collect())
}

/// Finds the program `name` names: a path if it has a `/`, else the first
/// executable file of that name in `PATH`, as the shell does.
pub fn find(name: &OsStr) -> Result<PathBuf> {
    let not_found = || {
        Failure::new(
            fail::NOT_FOUND,
            format!(
                "command not found: {} (no such file, or not in PATH)",
                name.to_string_lossy()
            ),
        )
    };
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match path.metadata() {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(Failure::new(
                fail::CANNOT_EXECUTE,
                format!("{} is not a file", path.display()),
            )),
            Err(_) => Err(not_found()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(not_found)
}

/// Replaces this process with `command`, giving it `fds` as fds 3, 4, …
/// with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` set (the systemd
/// socket-activation convention), and the variables of `env`. The command
/// inherits no other fd but 0–2. `fds` must be all that the caller still
/// holds above 2: the numbers 3, 4, … are taken over whatever they hold.
/// Returns only on failure.
pub fn exec_with_fds(
    fds: Vec<OwnedFd>,
    names: &[String],
    program: &Path,
    command: &[OsString],
    env: &[(&str, &OsStr)],
) -> Failure {
    match lay_out(fds) {
        Ok(count) => {
            let err = Command::new(program)
                .arg0(&command[0])
                .args(&command[1..])
                .env("LISTEN_FDS", count.to_string())
                .env("LISTEN_PID", std::process::id().to_string())
                .env("LISTEN_FDNAMES", names.join(":"))
                .envs(env.iter().copied())
                .exec();
            let name = command[0].to_string_lossy();
            match err.kind() {
                ErrorKind::PermissionDenied => Failure::new(
                    fail::CANNOT_EXECUTE,
                    format!("cannot run {name}: {err} (is it executable?)"),
                ),
                _ => Failure::new(fail::CANNOT_EXECUTE, format!("cannot run {name}: {err}")),
            }
        }
        Err(err) => Failure::os("cannot arrange the fds for the command", err),
    }
}

/// Moves `fds` to 3, 4, … without close-on-exec, and marks every other fd
/// above 2 close-on-exec, and any of 0–2 that the shell had closed. Returns
/// how many were laid out.
fn lay_out(fds: Vec<OwnedFd>) -> std::io::Result<usize> {
    for fd in (0..FIRST).filter(|&fd| crate::output::closed_at_start(fd)) {
        // SAFETY: std opened /dev/null at `fd`, which it keeps open for
        // the life of the process; only its flags are changed.
        fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC)?;
    }
    let count = fds.len();
    let end = FIRST + count as RawFd;
    // First out of the way of the targets, so that no target is the source
    // of a later move.
    let moved = fds
        .into_iter()
        .map(|fd| fcntl_dupfd_cloexec(&fd, end).map_err(std::io::Error::from))
        .collect::<std::io::Result<Vec<_>>>()?;
    if !cloexec_from(end) {
        for fd in open_fds()? {
            if fd >= end {
                // SAFETY: `fd` was open a moment ago in this single-threaded
                // process, and only its flags are changed.
                let _ = fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC);
            }
        }
    }
    for (i, fd) in moved.iter().enumerate() {
        let target = FIRST + i as RawFd;
        // SAFETY: `dup2` only takes two numbers. `fd` is open, owned by
        // `moved`. `target` may be unused or open; if open, nothing in this
        // process owns or borrows it any more: the callers hand over every
        // fd they hold above 2, and those were moved out of the way above
        // and closed. What `dup2` puts at `target` is owned by no one here,
        // so no drop closes it; it is left open for the command.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(count)
}

/// Marks every fd from `first` on close-on-exec in one system call
/// (`close_range(2)` with `CLOSE_RANGE_CLOEXEC`); false where the kernel
/// cannot, and nothing was changed.
#[cfg(fdpass_close_range_cloexec)]
fn cloexec_from(first: RawFd) -> bool {
    // SAFETY: with CLOSE_RANGE_CLOEXEC the call closes nothing; it only
    // sets the flag of the fds in the range.
    let got = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    got == 0
}

#[cfg(not(fdpass_close_range_cloexec))]
fn cloexec_from(_first: RawFd) -> bool {
    false
}

/// The numbers of this process's open fds.
fn open_fds() -> std::io::Result<Vec<RawFd>> {
    match std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")) {
        // The directory's own fd is among them, closed by the time it is
        // used; setting its flags then fails harmlessly.
        Ok(dir) => Ok(dir
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect()),
        // No fd directory: every number up to the open-file limit.
        Err(_) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(65_536)
                .min(65_536) as RawFd;
            Ok((0..limit).collect())
        }
    }
}
