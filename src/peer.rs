//! Who is at the other end of a unix socket, connecting to one without
//! waiting on its listener, and refusing fds on one.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys;

/// The credentials of a unix socket's peer, as the kernel recorded them
/// when the connection was made (or, for a socket pair, created).
///
/// From `SO_PEERCRED` on Linux, `getpeereid` on macOS and the BSDs, and
/// `getpeerucred` on illumos.
#[derive(Debug)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, where the OS tells it (Linux, Android,
    /// illumos). By the time it is read the process may have exited and the
    /// pid gone to another: use [`pidfd`](Self::pidfd) where it is there.
    pub pid: Option<u32>,
    /// A pidfd of the peer process (`SO_PEERPIDFD`, Linux 6.5 and later),
    /// which names that process and no later one of the same pid. Close-on-
    /// exec.
    pub pidfd: Option<OwnedFd>,
}

/// Reads the credentials of the peer of `socket`, a connected unix socket.
///
/// # Errors
///
/// The error of the system call: `ENOTCONN` (Uncategorized) for a socket
/// that is not connected, `ENOTSOCK` for an fd that is no socket, …
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixStream;
///
/// let (a, _b) = UnixStream::pair()?;
/// let peer = io_fdpass::peer_credentials(&a)?;
/// assert_eq!(peer.uid, rustix::process::getuid().as_raw());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn peer_credentials(socket: impl AsFd) -> io::Result<PeerCredentials> {
    let socket = socket.as_fd();
    let (uid, gid, pid) = sys::peer_credentials(socket)?;
    Ok(PeerCredentials {
        uid,
        gid,
        pid,
        pidfd: sys::peer_pidfd(socket)?,
    })
}

/// Connects to the unix socket at `address`: a path, or on Linux `@name`
/// for a name in the abstract namespace.
///
/// Unlike [`UnixStream::connect`](std::os::unix::net::UnixStream::connect),
/// it never waits: a listener whose backlog is full gives
/// [`ErrorKind::WouldBlock`](io::ErrorKind::WouldBlock) at once, where a
/// blocking connect waits for as long as the listener does not accept,
/// which a hostile listener can make forever. The stream it returns is
/// blocking and close-on-exec.
///
/// # Errors
///
/// The error of `connect(2)`: [`NotFound`](io::ErrorKind::NotFound) for no
/// socket at a path, [`ConnectionRefused`](io::ErrorKind::ConnectionRefused)
/// for one that nothing listens on, [`PermissionDenied`](io::ErrorKind::PermissionDenied),
/// and [`InvalidInput`](io::ErrorKind::InvalidInput) for a path too long
/// for a socket address.
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixListener;
///
/// let dir = std::env::temp_dir().join(format!("io-fdpass-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("connect.sock");
/// let listener = UnixListener::bind(&path)?;
/// let stream = io_fdpass::connect(&path)?;
/// # drop((stream, listener));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect(address: impl AsRef<std::ffi::OsStr>) -> io::Result<std::os::unix::net::UnixStream> {
    sys::connect_unix(address.as_ref()).map(Into::into)
}

/// Makes the kernel refuse fds sent to `socket` (`SO_PASSRIGHTS` off, Linux
/// 6.16 and later): a sender's `sendmsg` with `SCM_RIGHTS` fails with
/// `EPERM`, and nothing arrives that could fill this process's fd table.
/// For a socket that only ever receives data. Returns `false`, changing
/// nothing, where the kernel lacks the option.
///
/// # Errors
///
/// The error of `setsockopt(2)` other than a kernel without the option.
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// if io_fdpass::refuse_fds(&b)? {
///     let file = std::fs::File::open("Cargo.toml")?;
///     assert!(io_fdpass::send(&a, &file).is_err());
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn refuse_fds(socket: impl AsFd) -> io::Result<bool> {
    sys::refuse_fds(socket.as_fd())
}
