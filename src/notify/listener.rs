//! The receiving end of the notify protocol, for a program that starts
//! another and waits until it says `READY=1`, as a service manager does:
//! [`Restart::spawn`](crate::restart::Restart::spawn) and `fdpass adopt
//! --stop-old` both wait this way.

use std::fmt;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// The longest datagram a [`Listener`] reads, as systemd's manager
/// (`NOTIFY_BUFFER_MAX`): a longer one is ignored whole.
pub const MAX_DATAGRAM: usize = 4096;

/// A notify socket of the caller's own: a datagram socket bound in a fresh
/// directory that only this user may enter, so that no other user's
/// process can speak on it. Put its [`path`](Listener::path) in the
/// `NOTIFY_SOCKET` of the process to be heard. Dropping it closes the
/// socket and removes the socket and the directory.
///
/// Fds sent to it are refused (`SO_PASSRIGHTS` off, where the kernel has
/// it) or closed as they arrive: what is read is text. Each datagram comes
/// as a [`Notification`] that names its sender where the OS tells it, so a
/// caller can hear only the process it started, or pass each message on
/// (to the `$NOTIFY_SOCKET` of its own service manager, say, with
/// [`Notifier::send`](super::Notifier::send)).
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use io_fdpass::notify::{Listener, Notifier};
///
/// let listener = Listener::new()?;
/// // In real use, the started process says it, with `notify::ready()`.
/// Notifier::new(listener.path()).send("STATUS=starting\nREADY=1", &[])?;
/// let ready = listener.wait_ready(Some(Duration::from_secs(5)))?;
/// assert!(ready.is_some_and(|n| n.says_ready()));
/// # Ok(())
/// # }
/// ```
pub struct Listener {
    socket: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
    /// Whether dropping it removes the socket and the directory.
    remove: bool,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One datagram a [`Listener`] received: its text and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    bytes: Vec<u8>,
    pid: Option<u32>,
}

impl Notification {
    /// The datagram as it came: assignments such as `READY=1`, one a line.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The pid of the process that sent it, as the kernel vouches for it
    /// (`SCM_CREDENTIALS`, Linux and Android); `None` elsewhere, or when the
    /// sender is in a pid namespace this process cannot see.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether it says `READY=1`, on a line of its own.
    #[must_use]
    pub fn says_ready(&self) -> bool {
        super::says_ready(&self.bytes)
    }
}

impl Listener {
    /// Binds a new notify socket, `notify` in a new directory of mode 0700
    /// under [`std::env::temp_dir`].
    ///
    /// # Errors
    ///
    /// The error of making the directory or binding the socket, as a
    /// message that says what it was for; nothing is left behind.
    pub fn new() -> io::Result<Listener> {
        let failed =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot make a notify socket: {e}"));
        let dir = private_dir().map_err(failed)?;
        let path = dir.join("notify");
        match bind(&path) {
            Ok(socket) => Ok(Listener {
                socket,
                dir,
                path,
                remove: true,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir(&dir);
                Err(failed(e))
            }
        }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` (`None`: for as long as it takes) for the
    /// next datagram: `Ok(None)` when none came in time. A datagram longer
    /// than [`MAX_DATAGRAM`] is ignored, as systemd ignores it, and the
    /// wait goes on.
    ///
    /// # Errors
    ///
    /// The error of `poll(2)` or `recvmsg(2)` on the socket, other than an
    /// interruption by a signal, which is retried.
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Option<Notification>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            match sys::recv_datagram(self.socket.as_fd(), &mut buf) {
                Ok(got) if !got.truncated => {
                    return Ok(Some(Notification {
                        bytes: buf[..got.bytes].to_vec(),
                        pid: got.pid,
                    }));
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !wait_readable(self.socket.as_fd(), deadline).map_err(|e| self.error(e))? {
                        return Ok(None);
                    }
                    continue;
                }
                Err(e) => return Err(self.error(e)),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Reads datagrams for up to `timeout` (`None`: for as long as it
    /// takes) until one says `READY=1`, and returns it: `Ok(None)` when
    /// none did in time. The others are read and passed over. A timeout
    /// of zero reads what has come already.
    ///
    /// # Errors
    ///
    /// As [`recv_fd`](Listener::recv).
    pub fn wait_ready(&self, timeout: Option<Duration>) -> io::Result<Option<Notification>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.recv(left)? {
                Some(message) if message.says_ready() => return Ok(Some(message)),
                Some(_) if left.is_some_and(|left| left.is_zero()) => return Ok(None),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Closes the socket in this process and returns its path, leaving the
    /// socket and its directory in place. For a process that forked after
    /// [`Listener::new`]: the copy that goes on listening removes them
    /// when it is dropped, and the other lets go of them this way.
    #[must_use]
    pub fn keep(mut self) -> PathBuf {
        self.remove = false;
        self.path.clone()
    }

    fn error(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("cannot read the notify socket {}: {e}", self.path.display()),
        )
    }
}

impl AsFd for Listener {
    /// The socket, for a caller that waits on it beside other fds: it is
    /// non-blocking, and [`wait_ready`](Listener::wait_ready) with a zero
    /// timeout reads what has come.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A fresh directory of mode 0700 under the temporary directory. A name
/// that exists already is someone else's, or stale: never used.
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("io-fdpass-notify-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "100 names for a directory in {} were taken already",
            base.display()
        ),
    ))
}

/// The socket at `path`: non-blocking, fds refused where the kernel can,
/// and on Linux each datagram with its sender's credentials.
fn bind(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::bind(path)?;
    crate::refuse_fds(&socket)?;
    socket.set_nonblocking(true)?;
    #[cfg(fdpass_linux_kernel)]
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    Ok(socket)
}

/// Waits until `socket` has something to read, or `deadline` passes
/// (`false`).
fn wait_readable(socket: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // A wait too long for a timespec is a wait without end.
        let timeout = left.and_then(|left| Timespec::try_from(left).ok());
        let mut fds = [PollFd::new(&socket, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) if left.is_some_and(|left| left.is_zero()) => return Ok(false),
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fds that a sender attaches never stay open here, whether the kernel
    /// drops them or hands them over; the sender is named on Linux.
    #[test]
    fn fds_that_come_are_closed_and_the_sender_named() {
        let (a, b) = UnixDatagram::pair().unwrap();
        #[cfg(fdpass_linux_kernel)]
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (read, write) = rustix::pipe::pipe().unwrap();
        rustix::io::ioctl_fionbio(&read, true).unwrap();
        crate::send_fds(&a, b"READY=1", &[write.as_fd(), write.as_fd()]).unwrap();
        drop(write);
        let mut buf = [0; MAX_DATAGRAM];
        let got = sys::recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.bytes], b"READY=1");
        assert!(!got.truncated);
        if cfg!(fdpass_linux_kernel) {
            assert_eq!(got.pid, Some(std::process::id()));
        }
        // No copy of the write end is left: the read end is at its end.
        assert_eq!(rustix::io::read(&read, &mut [0]), Ok(0));

        a.send(&[b'x'; MAX_DATAGRAM + 1]).unwrap();
        let got = sys::recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert!(got.truncated);
        let e = sys::recv_datagram(b.as_fd(), &mut buf).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }
}
