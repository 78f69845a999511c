//! Another process's fds: what it holds, and a copy of any of them, taken
//! without its help (Linux 5.6 and later, and Android).
//!
//! Every other way of handing over a socket needs the process that holds
//! it to take part: socket activation, an fd store, [`send_fd`](crate::send_fd).
//! A server started without any of them can still be replaced without
//! refusing a connection: [`Process::copy_fd`] copies its listening socket
//! out of it with `pidfd_getfd`, a new server takes over the copy, and the
//! old one can be stopped. The kernel allows it where it would allow
//! `ptrace`: to a process of the same user (uid and gid), when
//! `kernel.yama.ptrace_scope` does not forbid it (at 1 it lets only
//! ancestors of the process do it), or to one with `CAP_SYS_PTRACE`.
//!
//! [`Process::fds`] lists the fds the process holds, from `/proc/PID/fd`,
//! and what each is: a file and its path, a pipe, a socket with its
//! family, type, address and whether it listens, matched by inode with the
//! tables of `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` (the process's own
//! network namespace).
//!
//! A [`Process`] holds a pidfd, which names one process and never a later
//! one that reuses its pid: what is listed and copied, and the process
//! [`terminate`](Process::terminate) stops, is that one or none.
//!
//! On other systems [`Process::open`] fails with
//! [`ErrorKind::Unsupported`](std::io::ErrorKind::Unsupported).
//!
//! # Examples
//!
//! Take over whatever listens on a port in a process, and stop it:
//!
//! ```no_run
//! use io_fdpass::process::Process;
//! use io_fdpass::SocketAddress;
//!
//! let old = Process::open(4242)?;
//! let at = SocketAddress::Inet("127.0.0.1:8080".parse().unwrap());
//! let fd = old
//!     .fds()?
//!     .into_iter()
//!     .find(|fd| fd.kind.socket().is_some_and(|s| s.listening && s.local.as_ref() == Some(&at)))
//!     .expect("a listener on port 8080");
//! let listener = std::net::TcpListener::from(old.copy_fd(fd.fd)?);
//! old.terminate()?;
//! // Connections that were waiting for the old process are accepted here.
//! let (connection, _) = listener.accept()?;
//! # drop(connection);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use crate::{sys, FdKind};

/// A process whose fds may be listed and copied, held by a pidfd.
///
/// # Examples
///
/// ```
/// use io_fdpass::process::Process;
///
/// let me = Process::open(std::process::id())?;
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.has_exited()?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Process {
    pidfd: OwnedFd,
    pid: u32,
}

/// One fd of a process, and what it is.
///
/// # Examples
///
/// ```
/// use io_fdpass::process::Process;
///
/// let me = Process::open(std::process::id())?;
/// for fd in me.fds()? {
///     println!("{} {}", fd.fd, fd.kind); // 0 the regular file /dev/null, …
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessFd {
    /// Its number in that process.
    pub fd: RawFd,
    /// What it is.
    pub kind: FdKind,
}

impl Process {
    /// Opens process `pid` (`pidfd_open(2)`), close-on-exec.
    ///
    /// This needs no permission: listing and copying fds do.
    ///
    /// # Errors
    ///
    /// - [`NotFound`](io::ErrorKind::NotFound): there is no process `pid`.
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput): `pid` is 0, out of
    ///   range, or a thread rather than a process (the message names its
    ///   process).
    /// - [`Unsupported`](io::ErrorKind::Unsupported): a kernel without
    ///   `pidfd_open` (before Linux 5.3), or a system other than Linux and
    ///   Android.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::process::Process;
    ///
    /// let child = std::process::Command::new("true").spawn()?;
    /// let process = Process::open(child.id())?;
    /// # drop((process, child));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(pid: u32) -> io::Result<Process> {
        Ok(Process {
            pidfd: sys::pidfd_open(pid)?,
            pid,
        })
    }

    /// The process id it was opened with.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::process::Process;
    ///
    /// assert_eq!(Process::open(std::process::id())?.pid(), std::process::id());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The fds the process holds, in order, and what each is (see the
    /// [module documentation](self)).
    ///
    /// An fd the process closes while it is being read is left out. A
    /// socket that none of the tables lists (netlink, raw, packet…) has the
    /// family and type [`Other`](crate::SocketFamily::Other).
    ///
    /// # Errors
    ///
    /// - [`NotFound`](io::ErrorKind::NotFound): the process has exited
    ///   (what was read may have been another's, and is not returned).
    /// - [`PermissionDenied`](io::ErrorKind::PermissionDenied): this
    ///   process may not read its fd table; the message says what stands in
    ///   the way (another uid or gid, a process that is not dumpable) and
    ///   what to do.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::process::Process;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let fds = Process::open(std::process::id())?.fds()?;
    /// let mine = fds.iter().find(|fd| fd.kind.socket().is_some_and(|s| s.is_tcp_listener()));
    /// assert!(mine.is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn fds(&self) -> io::Result<Vec<ProcessFd>> {
        let mut fds: Vec<ProcessFd> = sys::process_fds(self.pidfd.as_fd(), self.pid)?
            .into_iter()
            .map(|(fd, kind)| ProcessFd { fd, kind })
            .collect();
        fds.sort_by_key(|fd| fd.fd);
        Ok(fds)
    }

    /// Copies fd `fd` of the process into this one (`pidfd_getfd(2)`), as
    /// `dup` would within one process: both refer to the same open file
    /// or socket. The copy is close-on-exec. The process is not told and
    /// is not stopped.
    ///
    /// # Errors
    ///
    /// - [`NotFound`](io::ErrorKind::NotFound): the process has no fd `fd`
    ///   open, or it has exited.
    /// - [`PermissionDenied`](io::ErrorKind::PermissionDenied): this
    ///   process may not take its fds; the message says which of
    ///   `kernel.yama.ptrace_scope`, the uid or gid, or the lack of
    ///   `CAP_SYS_PTRACE` stands in the way, and what to do.
    /// - [`Unsupported`](io::ErrorKind::Unsupported): a kernel without
    ///   `pidfd_getfd` (`ENOSYS`: before Linux 5.6).
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput): a negative `fd`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Seek};
    /// use std::os::fd::AsRawFd;
    /// use io_fdpass::process::Process;
    ///
    /// let file = std::fs::File::open("Cargo.toml")?;
    /// let me = Process::open(std::process::id())?;
    /// let mut copy = std::fs::File::from(me.copy_fd(file.as_raw_fd())?);
    /// let mut text = String::new();
    /// copy.read_to_string(&mut text)?;
    /// assert!(text.contains("io-fdpass"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn copy_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{fd} is not an fd number"),
            ));
        }
        sys::pidfd_getfd(self.pidfd.as_fd(), self.pid, fd)
    }

    /// Asks the process to stop: `SIGTERM`, sent through the pidfd
    /// (`pidfd_send_signal(2)`), so that it reaches this process or none.
    ///
    /// # Errors
    ///
    /// - [`NotFound`](io::ErrorKind::NotFound): it has exited already.
    /// - [`PermissionDenied`](io::ErrorKind::PermissionDenied): this
    ///   process may not signal it (another user).
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::process::Process;
    ///
    /// let mut child = std::process::Command::new("sleep").arg("60").spawn()?;
    /// Process::open(child.id())?.terminate()?;
    /// assert!(!child.wait()?.success());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn terminate(&self) -> io::Result<()> {
        sys::pidfd_terminate(self.pidfd.as_fd(), self.pid)
    }

    /// Whether the process has exited (its pidfd is readable), whether or
    /// not its parent has collected its status.
    ///
    /// # Errors
    ///
    /// The error of `poll`, which is not expected.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::process::Process;
    ///
    /// let mut child = std::process::Command::new("true").spawn()?;
    /// let process = Process::open(child.id())?;
    /// child.wait()?;
    /// assert!(process.has_exited()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn has_exited(&self) -> io::Result<bool> {
        sys::pidfd_exited(self.pidfd.as_fd())
    }
}

impl AsFd for Process {
    /// The pidfd: `poll` finds it readable once the process has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use io_fdpass::process::Process;
    ///
    /// let me = Process::open(std::process::id())?;
    /// let pidfd = me.as_fd();
    /// # drop(pidfd);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}
