//! Another process's fds on the Linux kernel (Linux and Android): its
//! pidfd (`pidfd_open`, `pidfd_getfd`, `pidfd_send_signal`, `poll`), and
//! what `/proc` says of it. The text of `/proc` is read here and
//! understood in `procfs.rs`; every refusal is explained there.

use std::io::{self, ErrorKind};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::procfs::{self, Asked, Sockets, Standing, Status};
use crate::{FdKind, SocketFamily, SocketType};

/// Opens a pidfd for process `pid`.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let Some(raw) = raw else {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{pid} is not a process id"),
        ));
    };
    calls::pidfd_open(raw).map_err(|errno| match errno {
        Errno::SRCH => no_process(pid),
        // A thread that leads no process: EINVAL, or ENOENT since Linux
        // 6.9's pidfs.
        Errno::INVAL | Errno::NOENT => match status(pid).tgid {
            Some(tgid) if tgid != pid => io::Error::new(
                ErrorKind::InvalidInput,
                format!("{pid} is a thread of process {tgid}, not a process: give {tgid}"),
            ),
            _ if errno == Errno::NOENT => no_process(pid),
            _ => io::Error::new(
                ErrorKind::InvalidInput,
                format!("{pid} is not a process id"),
            ),
        },
        Errno::NOSYS => io::Error::new(
            ErrorKind::Unsupported,
            "this kernel has no pidfd_open: reading another process's fds needs Linux 5.3, \
             and taking them Linux 5.6 (pidfd_getfd)",
        ),
        errno => io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot open process {pid} (pidfd_open): {errno}"),
        ),
    })
}

/// Copies fd `fd` of process `pid`, whose pidfd is `pidfd`.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, pid: u32, fd: RawFd) -> io::Result<OwnedFd> {
    calls::pidfd_getfd(pidfd, fd).map_err(|errno| match errno {
        // A zombie has no fds: it says EBADF for every one.
        Errno::BADF | Errno::SRCH if pidfd_exited(pidfd).unwrap_or(false) => exited(pid),
        Errno::SRCH => exited(pid),
        Errno::BADF => io::Error::new(
            ErrorKind::NotFound,
            format!("process {pid} has no fd {fd} open (/proc/{pid}/fd lists those it has)"),
        ),
        Errno::PERM | Errno::ACCESS => refused(pid, Asked::Attach),
        Errno::NOSYS => io::Error::new(
            ErrorKind::Unsupported,
            "this kernel has no pidfd_getfd: taking another process's fds needs Linux 5.6 \
             or later",
        ),
        errno => io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot take fd {fd} of process {pid} (pidfd_getfd): {errno}"),
        ),
    })
}

/// Whether the process of `pidfd` has exited: its pidfd is readable.
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&now)) {
            Ok(_) => return Ok(!fds[0].revents().is_empty()),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Sends `SIGTERM` to the process of `pidfd`.
pub(crate) fn pidfd_terminate(pidfd: BorrowedFd<'_>, pid: u32) -> io::Result<()> {
    calls::pidfd_terminate(pidfd).map_err(|errno| match errno {
        Errno::SRCH => exited(pid),
        Errno::PERM => io::Error::new(
            ErrorKind::PermissionDenied,
            format!("not permitted to signal process {pid}: it runs as another user"),
        ),
        errno => io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot signal process {pid}: {errno}"),
        ),
    })
}

/// The fds of process `pid`, whose pidfd is `pidfd`, and what each is.
pub(crate) fn process_fds(pidfd: BorrowedFd<'_>, pid: u32) -> io::Result<Vec<(RawFd, FdKind)>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => return Err(unreadable(pidfd, pid, e)),
    };
    let mut fds = Vec::new();
    // Sockets by inode, described once the tables are read.
    let mut sockets = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(pidfd, pid, e))?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        // The fd's target (the link is followed), and what the link says.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // Closed since the directory was read.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(unreadable(pidfd, pid, e)),
        };
        let link = std::fs::read_link(&path).ok();
        // `mode_t` is 16 bits on some targets: the type bits fit.
        #[allow(clippy::cast_possible_truncation)]
        let ty = rustix::fs::FileType::from_raw_mode(meta.mode() as rustix::fs::RawMode);
        let kind = super::kind_by_type(ty, link).unwrap_or_else(|| {
            sockets.push((fds.len(), meta.ino()));
            FdKind::Socket(procfs::unknown_socket())
        });
        fds.push((fd, kind));
    }
    // The kernel writes each table a page at a time, and a socket opened
    // or closed elsewhere between two pages can hide a line of one that
    // stays: a socket missing from every table is looked for again. One of
    // a family that no table lists (netlink, raw) stays unknown.
    for _ in 0..5 {
        if sockets.is_empty() {
            break;
        }
        let tables = socket_tables(pid)?;
        sockets.retain(|&(i, inode)| match tables.get(inode) {
            Some(socket) => {
                fds[i].1 = FdKind::Socket(socket.clone());
                false
            }
            None => true,
        });
    }
    // Alive now, so alive throughout: what was read was this process's,
    // not a later one's of the same pid.
    if pidfd_exited(pidfd)? {
        return Err(exited(pid));
    }
    Ok(fds)
}

/// The sockets of the network namespace of process `pid`.
fn socket_tables(pid: u32) -> io::Result<Sockets> {
    let mut sockets = Sockets::default();
    let read = |name: &str| match std::fs::read(format!("/proc/{pid}/net/{name}")) {
        Ok(table) => Ok(table),
        // No IPv6, for one.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read /proc/{pid}/net/{name}: {e}"),
        )),
    };
    for (name, family, ty) in [
        ("tcp", SocketFamily::Inet, SocketType::Stream),
        ("tcp6", SocketFamily::Inet6, SocketType::Stream),
        ("udp", SocketFamily::Inet, SocketType::Datagram),
        ("udp6", SocketFamily::Inet6, SocketType::Datagram),
    ] {
        sockets.add_inet(&read(name)?, family, ty);
    }
    sockets.add_unix(&read("unix")?);
    Ok(sockets)
}

/// The error for a `/proc/PID/fd` that could not be read.
fn unreadable(pidfd: BorrowedFd<'_>, pid: u32, e: io::Error) -> io::Error {
    let exited_now = pidfd_exited(pidfd).unwrap_or(false);
    match e.kind() {
        _ if exited_now => exited(pid),
        ErrorKind::PermissionDenied => refused(pid, Asked::Read),
        ErrorKind::NotFound => io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "process {pid} is running, but /proc/{pid} cannot be seen from here: /proc may \
                 be mounted with hidepid=, or belong to another pid namespace"
            ),
        ),
        kind => io::Error::new(kind, format!("cannot read /proc/{pid}/fd: {e}")),
    }
}

fn no_process(pid: u32) -> io::Error {
    io::Error::new(
        ErrorKind::NotFound,
        format!("there is no process {pid} (it may have exited): check the pid"),
    )
}

fn exited(pid: u32) -> io::Error {
    io::Error::new(ErrorKind::NotFound, format!("process {pid} has exited"))
}

/// The error for a refusal, saying what stands in the way.
fn refused(pid: u32, asked: Asked) -> io::Error {
    let target = std::fs::read(format!("/proc/{pid}/status"))
        .ok()
        .map(|text| Status::parse(&text));
    // The kernel makes /proc/PID root's while a process is not dumpable.
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid());
    let dumpable = match (&target, owner) {
        (
            Some(Status {
                uids: Some(uids), ..
            }),
            Some(owner),
        ) if uids[1] != 0 => Some(owner == uids[1]),
        _ => None,
    };
    let ptrace_scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|scope| scope.trim().parse().ok());
    let standing = Standing {
        pid,
        asked,
        ptrace_scope,
        own: status_of("self"),
        target,
        dumpable,
        ancestor: Some(is_ancestor_of(pid)),
    };
    let what = match asked {
        Asked::Read => format!("not permitted to list the fds of process {pid}"),
        Asked::Attach => format!("not permitted to take fds of process {pid}"),
    };
    io::Error::new(
        ErrorKind::PermissionDenied,
        format!("{what}: {}", procfs::refusal(&standing)),
    )
}

fn status(pid: u32) -> Status {
    status_of(&pid.to_string())
}

fn status_of(which: &str) -> Status {
    std::fs::read(PathBuf::from(format!("/proc/{which}/status")))
        .map(|text| Status::parse(&text))
        .unwrap_or_default()
}

/// Whether this process is an ancestor of process `pid`.
fn is_ancestor_of(pid: u32) -> bool {
    let me = std::process::id();
    let mut at = pid;
    // Bounded, whatever a malformed chain of parents says.
    for _ in 0..4096 {
        match status(at).ppid {
            Some(parent) if parent == me => return true,
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

/// The pidfd calls, through rustix on Linux.
#[cfg(fdpass_rustix_pidfd)]
mod calls {
    use super::{BorrowedFd, Errno, OwnedFd, RawFd};
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, Signal};

    pub(super) fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
        rustix::process::pidfd_open(pid, PidfdFlags::empty())
    }

    pub(super) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
        rustix::process::pidfd_getfd(pidfd, fd, PidfdGetfdFlags::empty())
    }

    pub(super) fn pidfd_terminate(pidfd: BorrowedFd<'_>) -> Result<(), Errno> {
        rustix::process::pidfd_send_signal(pidfd, Signal::TERM)
    }
}

/// The pidfd calls as raw system calls on Android, for which rustix 1.1
/// has none.
#[cfg(not(fdpass_rustix_pidfd))]
mod calls {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    /// A system call that returns an fd the kernel opened for this
    /// process, or -1 and errno.
    fn new_fd(ret: libc::c_long) -> Result<OwnedFd, Errno> {
        match RawFd::try_from(ret) {
            // SAFETY: a new fd the kernel opened for this process, owned
            // by no one else.
            Ok(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ => Err(last_errno()),
        }
    }

    pub(super) fn pidfd_open(pid: rustix::process::Pid) -> Result<OwnedFd, Errno> {
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        new_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw_nonzero().get(), 0) })
    }

    pub(super) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
        // SAFETY: pidfd_getfd takes an open pidfd, a number in the other
        // process and flags; no pointers.
        new_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
    }

    pub(super) fn pidfd_terminate(pidfd: BorrowedFd<'_>) -> Result<(), Errno> {
        let info: *const libc::siginfo_t = std::ptr::null();
        // SAFETY: an open pidfd and a signal number; a null siginfo asks
        // the kernel to fill it in as `kill` would.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGTERM,
                info,
                0,
            )
        };
        match ret {
            0 => Ok(()),
            _ => Err(last_errno()),
        }
    }

    fn last_errno() -> Errno {
        Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::INVAL)
    }
}
