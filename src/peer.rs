//! Who is at the other end of a unix socket (on Windows, of a local
//! connection), whom to trust there, and refusing fds on one.

use std::io;
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(windows)]
use std::os::windows::io::AsSocket;

use crate::sys;

/// A user, as the OS names one: a uid on Unix, a SID's string form
/// (`S-1-5-21-…`) on Windows.
#[cfg(unix)]
type User = u32;
#[cfg(windows)]
type User = String;

/// The user every OS trusts: root, and Windows's `LocalSystem`.
#[cfg(unix)]
fn is_superuser(user: &User) -> bool {
    *user == 0
}
#[cfg(windows)]
fn is_superuser(user: &User) -> bool {
    user == SYSTEM
}

/// The SID of Windows's `LocalSystem` account, its root.
#[cfg(windows)]
const SYSTEM: &str = "S-1-5-18";

/// A user in words, as a refusal names it.
#[cfg(unix)]
fn user_words(user: &User) -> String {
    format!("uid {user}")
}
#[cfg(windows)]
fn user_words(user: &User) -> String {
    format!("user {user}")
}

/// The superuser in words.
const SUPERUSER: &str = if cfg!(windows) { "SYSTEM" } else { "root" };

/// The credentials of a unix socket's peer, as the kernel recorded them
/// when the connection was made (or, for a socket pair, created).
///
/// From `SO_PEERCRED` on Linux, `getpeereid` on macOS and the BSDs, and
/// `getpeerucred` on illumos.
#[cfg(unix)]
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

/// The process and user at the other end of a local connection, on
/// Windows.
///
/// The pid comes from `SIO_AF_UNIX_GETPEERPID` on an `AF_UNIX` socket, and
/// for loopback TCP from the machine's connection table
/// (`GetExtendedTcpTable`), whose row for the peer's end of this
/// connection (its local address and port are this socket's remote ones,
/// and the other way round) names the process that owns it. The user is
/// that process's token's: `OpenProcess`, `OpenProcessToken`,
/// `GetTokenInformation(TokenUser)`, as a SID string. Unlike Unix's
/// credentials these are read when asked, not when the connection was
/// made: a peer that exits, and whose pid goes to another process, in
/// between would be taken for that process; a holder checks at once.
#[cfg(windows)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The user the peer process runs as: its SID, `S-1-5-21-…`.
    pub user: String,
    /// The peer's process id.
    pub pid: Option<u32>,
}

/// Reads the process and user at the other end of `socket`, a connected
/// socket to a process on this machine (see [`PeerCredentials`]).
///
/// # Errors
///
/// [`ErrorKind::PermissionDenied`](io::ErrorKind::PermissionDenied) when
/// no process of this machine owns the other end (a remote peer, or a
/// connection already gone), and the error of opening that process or its
/// token.
#[cfg(windows)]
pub fn peer_credentials(socket: impl AsSocket) -> io::Result<PeerCredentials> {
    let Some(pid) = sys::peer_pid(socket.as_socket()) else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no process of this machine owns the other end of the connection: the peer cannot be checked",
        ));
    };
    Ok(PeerCredentials {
        user: sys::process_user(pid)?,
        pid: Some(pid),
    })
}

/// The user this process runs as: its token's SID.
///
/// # Errors
///
/// The error of opening this process's token.
#[cfg(windows)]
pub fn current_user() -> io::Result<String> {
    sys::process_user(sys::current_pid())
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
#[cfg(unix)]
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
#[cfg(unix)]
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
/// process's real uid, 0, or one allowed with `PeerTrust::allow_uid`, or
/// its gid is one allowed with `PeerTrust::allow_gid`. Its `Display`
/// says whom it trusts: `uid 1000 and root`.
///
/// On Windows the same rule holds of users named by SIDs: a peer is
/// trusted when its process runs as this process's user, as `LocalSystem`
/// (`S-1-5-18`, Windows's root), or as one allowed with
/// `PeerTrust::allow_user`; there are no groups to allow.
///
/// # Examples
///
/// ```
/// # #[cfg(unix)] {
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
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTrust {
    own: User,
    users: Vec<User>,
    #[cfg(unix)]
    gids: Vec<u32>,
}

impl Default for PeerTrust {
    fn default() -> PeerTrust {
        PeerTrust::new()
    }
}

impl PeerTrust {
    /// Trusts this process's user (its real uid, `getuid(2)`; on Windows
    /// its token's SID) and root (on Windows, `LocalSystem`).
    #[must_use]
    #[cfg(unix)]
    pub fn new() -> PeerTrust {
        PeerTrust::of_user(rustix::process::getuid().as_raw())
    }

    /// Trusts this process's user (its real uid, `getuid(2)`; on Windows
    /// its token's SID) and root (on Windows, `LocalSystem`). Where this
    /// process's token cannot be read, only `LocalSystem`.
    #[must_use]
    #[cfg(windows)]
    pub fn new() -> PeerTrust {
        PeerTrust::of_user(current_user().unwrap_or_else(|_| SYSTEM.to_owned()))
    }

    /// Trusts `user` and root, as a process of `user` does.
    fn of_user(user: User) -> PeerTrust {
        PeerTrust {
            own: user,
            users: Vec::new(),
            #[cfg(unix)]
            gids: Vec::new(),
        }
    }

    /// Also trusts `user`.
    fn allow(mut self, user: User) -> PeerTrust {
        if !self.users.contains(&user) {
            self.users.push(user);
        }
        self
    }

    /// Also trusts a peer whose effective uid is `uid`.
    #[must_use]
    #[cfg(unix)]
    pub fn allow_uid(self, uid: u32) -> PeerTrust {
        self.allow(uid)
    }

    /// Also trusts a peer whose process runs as the user of SID `sid`
    /// (`S-1-5-21-…`), on Windows.
    #[must_use]
    #[cfg(windows)]
    pub fn allow_user(self, sid: impl Into<String>) -> PeerTrust {
        self.allow(sid.into())
    }

    /// Also trusts each of `sids`, on Windows.
    #[must_use]
    #[cfg(windows)]
    pub fn allow_users(self, sids: impl IntoIterator<Item = impl Into<String>>) -> PeerTrust {
        sids.into_iter().fold(self, PeerTrust::allow_user)
    }

    /// Also trusts a peer whose effective gid is `gid`.
    #[must_use]
    #[cfg(unix)]
    pub fn allow_gid(mut self, gid: u32) -> PeerTrust {
        if !self.gids.contains(&gid) {
            self.gids.push(gid);
        }
        self
    }

    /// Also trusts each of `uids`.
    #[must_use]
    #[cfg(unix)]
    pub fn allow_uids(self, uids: impl IntoIterator<Item = u32>) -> PeerTrust {
        uids.into_iter().fold(self, PeerTrust::allow_uid)
    }

    /// Also trusts each of `gids`.
    #[must_use]
    #[cfg(unix)]
    pub fn allow_gids(self, gids: impl IntoIterator<Item = u32>) -> PeerTrust {
        gids.into_iter().fold(self, PeerTrust::allow_gid)
    }

    /// Whether `peer` is trusted.
    #[must_use]
    pub fn trusts(&self, peer: &PeerCredentials) -> bool {
        let user = peer_user(peer);
        *user == self.own
            || is_superuser(user)
            || self.users.contains(user)
            || self.trusts_group(peer)
    }

    #[cfg(unix)]
    fn trusts_group(&self, peer: &PeerCredentials) -> bool {
        self.gids.contains(&peer.gid)
    }
    #[cfg(windows)]
    #[expect(
        clippy::unused_self,
        reason = "the signature of Unix's, which trusts groups; Windows has none here"
    )]
    fn trusts_group(&self, _: &PeerCredentials) -> bool {
        false
    }

    /// Checks that `peer` is trusted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`](io::ErrorKind::PermissionDenied)
    /// when it is not, with a message that says who the peer is and whom
    /// this trusts: `the peer runs as uid 65534 (gid 65534), and only uid
    /// 1000 and root are trusted`; on Windows `the peer runs as user
    /// S-1-5-21-…-1001 (pid 42), and only user S-1-5-21-…-1000 and SYSTEM
    /// are trusted`.
    ///
    /// # Examples
    ///
    /// See [`PeerTrust`].
    pub fn check(&self, peer: &PeerCredentials) -> io::Result<()> {
        if self.trusts(peer) {
            return Ok(());
        }
        #[cfg(unix)]
        let pid = peer.pid.map_or(String::new(), |pid| format!(", pid {pid}"));
        let verb = if self.described().len() == 1 {
            "is"
        } else {
            "are"
        };
        #[cfg(unix)]
        let who = format!("uid {} (gid {}{pid})", peer.uid, peer.gid);
        #[cfg(windows)]
        let who = match peer.pid {
            Some(pid) => format!("user {} (pid {pid})", peer.user),
            None => format!("user {}", peer.user),
        };
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the peer runs as {who}, and only {self} {verb} trusted"),
        ))
    }

    /// Each one trusted, in words.
    fn described(&self) -> Vec<String> {
        let mut whom = Vec::new();
        if !is_superuser(&self.own) {
            whom.push(user_words(&self.own));
        }
        whom.push(SUPERUSER.to_owned());
        let more = self
            .users
            .iter()
            .filter(|&user| !is_superuser(user) && *user != self.own);
        whom.extend(more.map(user_words));
        #[cfg(unix)]
        whom.extend(self.gids.iter().map(|gid| format!("gid {gid}")));
        whom
    }
}

/// The user of `peer`.
#[cfg(unix)]
fn peer_user(peer: &PeerCredentials) -> &User {
    &peer.uid
}
#[cfg(windows)]
fn peer_user(peer: &PeerCredentials) -> &User {
    &peer.user
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

#[cfg(all(test, unix))]
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
        let trust = PeerTrust::of_user(1000);
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
        let err = PeerTrust::of_user(1000)
            .check(&peer(65534, 65533))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "the peer runs as uid 65534 (gid 65533, pid 42), and only uid 1000 and root are trusted"
        );
        let err = PeerTrust::of_user(0).check(&peer(7, 7)).unwrap_err();
        assert!(err.to_string().ends_with("only root is trusted"), "{err}");
        let trust = PeerTrust::of_user(1000)
            .allow_uids([0, 1000, 5, 5])
            .allow_gids([33]);
        assert_eq!(trust.to_string(), "uid 1000, root, uid 5 and gid 33");
    }
}

#[cfg(all(test, windows))]
mod tests {
    use super::*;

    const OWN: &str = "S-1-5-21-1-2-3-1000";
    const OTHER: &str = "S-1-5-21-1-2-3-1001";

    fn peer(user: &str) -> PeerCredentials {
        PeerCredentials {
            user: user.to_owned(),
            pid: Some(42),
        }
    }

    #[test]
    fn own_user_and_system_are_trusted_and_others_when_allowed() {
        let trust = PeerTrust::of_user(OWN.to_owned());
        assert!(trust.trusts(&peer(OWN)));
        assert!(trust.trusts(&peer(SYSTEM)));
        assert!(!trust.trusts(&peer(OTHER)));
        // A SID is compared whole: a prefix of one is another user.
        assert!(!trust.trusts(&peer("S-1-5-21-1-2-3-100")));
        let trust = trust.allow_user(OTHER);
        assert!(trust.trusts(&peer(OTHER)));
    }

    #[test]
    fn a_refusal_says_who_the_peer_is_and_whom_this_trusts() {
        let err = PeerTrust::of_user(OWN.to_owned())
            .check(&peer(OTHER))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let message = err.to_string();
        for says in [OTHER, "pid 42", OWN, "SYSTEM"] {
            assert!(message.contains(says), "{says:?} not in {message}");
        }
    }
}
