//! Who is at the other end of a unix socket, whom to trust there, and
//! refusing fds on one.

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
///     assert!(io_fdpass::send_fd(&a, &file).is_err());
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn refuse_fds(socket: impl AsFd) -> io::Result<bool> {
    sys::refuse_fds(socket.as_fd())
}

/// Whom a unix socket's peer may be: this process's user and root, and any
/// uids and groups allowed besides. The one rule for every end of an fd
/// exchange: a client checks the server it reached (an abstract socket
/// name has no file permissions, and anyone may take it first), a server
/// the client that connected.
///
/// A peer is trusted when its uid (from [`peer_credentials`]) is this
/// process's real uid, 0, or one allowed with [`PeerTrust::allow_uid`], or
/// its gid is one allowed with [`PeerTrust::allow_gid`]. Its `Display`
/// says whom it trusts: `uid 1000 and root`.
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use io_fdpass::{peer_credentials, PeerTrust};
///
/// let (a, _b) = UnixStream::pair()?;
/// let peer = peer_credentials(&a)?;
/// // The other end of a pair is this process: trusted.
/// PeerTrust::new().check(&peer)?;
/// // Trust for a service account as well.
/// let trust = PeerTrust::new().allow_uid(999).allow_gid(33);
/// assert!(trust.trusts(&peer));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTrust {
    own_uid: u32,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Default for PeerTrust {
    fn default() -> PeerTrust {
        PeerTrust::new()
    }
}

impl PeerTrust {
    /// Trusts this process's user (its real uid, `getuid(2)`) and root.
    #[must_use]
    pub fn new() -> PeerTrust {
        PeerTrust::of_uid(rustix::process::getuid().as_raw())
    }

    /// Trusts `uid` and root, as a process of `uid` does.
    fn of_uid(uid: u32) -> PeerTrust {
        PeerTrust {
            own_uid: uid,
            uids: Vec::new(),
            gids: Vec::new(),
        }
    }

    /// Also trusts a peer whose effective uid is `uid`.
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> PeerTrust {
        if !self.uids.contains(&uid) {
            self.uids.push(uid);
        }
        self
    }

    /// Also trusts a peer whose effective gid is `gid`.
    #[must_use]
    pub fn allow_gid(mut self, gid: u32) -> PeerTrust {
        if !self.gids.contains(&gid) {
            self.gids.push(gid);
        }
        self
    }

    /// Also trusts each of `uids`.
    #[must_use]
    pub fn allow_uids(self, uids: impl IntoIterator<Item = u32>) -> PeerTrust {
        uids.into_iter().fold(self, PeerTrust::allow_uid)
    }

    /// Also trusts each of `gids`.
    #[must_use]
    pub fn allow_gids(self, gids: impl IntoIterator<Item = u32>) -> PeerTrust {
        gids.into_iter().fold(self, PeerTrust::allow_gid)
    }

    /// Whether `peer` is trusted.
    #[must_use]
    pub fn trusts(&self, peer: &PeerCredentials) -> bool {
        peer.uid == self.own_uid
            || peer.uid == 0
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }

    /// Checks that `peer` is trusted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`](io::ErrorKind::PermissionDenied)
    /// when it is not, with a message that says who the peer is and whom
    /// this trusts: `the peer runs as uid 65534 (gid 65534), and only uid
    /// 1000 and root are trusted`.
    ///
    /// # Examples
    ///
    /// See [`PeerTrust`].
    pub fn check(&self, peer: &PeerCredentials) -> io::Result<()> {
        if self.trusts(peer) {
            return Ok(());
        }
        let pid = peer.pid.map_or(String::new(), |pid| format!(", pid {pid}"));
        let verb = if self.described().len() == 1 {
            "is"
        } else {
            "are"
        };
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the peer runs as uid {} (gid {}{pid}), and only {self} {verb} trusted",
                peer.uid, peer.gid
            ),
        ))
    }

    /// Each one trusted, in words.
    fn described(&self) -> Vec<String> {
        let mut whom = Vec::new();
        if self.own_uid != 0 {
            whom.push(format!("uid {}", self.own_uid));
        }
        whom.push("root".to_owned());
        let more = self
            .uids
            .iter()
            .filter(|&&uid| uid != 0 && uid != self.own_uid);
        whom.extend(more.map(|uid| format!("uid {uid}")));
        whom.extend(self.gids.iter().map(|gid| format!("gid {gid}")));
        whom
    }
}

impl std::fmt::Display for PeerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whom = self.described();
        match whom.split_last() {
            Some((last, [])) => f.write_str(last),
            Some((last, rest)) => write!(f, "{} and {last}", rest.join(", ")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid,
            pid: Some(42),
            pidfd: None,
        }
    }

    #[test]
    fn own_uid_and_root_are_trusted_and_others_when_allowed() {
        let trust = PeerTrust::of_uid(1000);
        assert!(trust.trusts(&peer(1000, 1000)));
        assert!(trust.trusts(&peer(0, 0)));
        assert!(!trust.trusts(&peer(1001, 1000)));
        let trust = trust.allow_uid(1001).allow_gid(33);
        assert!(trust.trusts(&peer(1001, 1001)));
        assert!(trust.trusts(&peer(1002, 33)));
        assert!(!trust.trusts(&peer(1002, 34)));
    }

    #[test]
    fn a_refusal_says_who_the_peer_is_and_whom_this_trusts() {
        let err = PeerTrust::of_uid(1000)
            .check(&peer(65534, 65533))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "the peer runs as uid 65534 (gid 65533, pid 42), and only uid 1000 and root are trusted"
        );
        let err = PeerTrust::of_uid(0).check(&peer(7, 7)).unwrap_err();
        assert!(err.to_string().ends_with("only root is trusted"), "{err}");
        let trust = PeerTrust::of_uid(1000)
            .allow_uids([0, 1000, 5, 5])
            .allow_gids([33]);
        assert_eq!(trust.to_string(), "uid 1000, root, uid 5 and gid 33");
    }
}
