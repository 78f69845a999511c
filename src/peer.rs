//! Who is at the other end of a unix socket.

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
