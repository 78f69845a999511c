//! Who is at the other end of a unix socket, and which process this one
//! is; whether a socket takes fds at all.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The credentials of the peer of a unix socket: uid, gid, and the pid
/// where the OS tells it.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    let pid = cred.pid.as_raw_nonzero().get().try_into().ok();
    Ok((cred.uid.as_raw(), cred.gid.as_raw(), pid))
}

/// illumos and Solaris: `getpeerucred`, which rustix does not bind.
#[cfg(fdpass_solarish)]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let mut cred: *mut libc::ucred_t = std::ptr::null_mut();
    // SAFETY: `cred` receives a ucred that this function frees.
    if unsafe { libc::getpeerucred(socket.as_raw_fd(), &mut cred) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `cred` is the valid ucred just returned; it is freed once
    // and not used after.
    let (uid, gid, pid) = unsafe {
        let ids = (
            libc::ucred_geteuid(cred),
            libc::ucred_getegid(cred),
            libc::ucred_getpid(cred),
        );
        libc::ucred_free(cred);
        ids
    };
    // The credentials may lack an id: -1 stands in for it.
    if uid == libc::uid_t::MAX || gid == libc::gid_t::MAX {
        return Err(io::Error::other(
            "the peer's credentials carry no uid or gid",
        ));
    }
    Ok((uid, gid, u32::try_from(pid).ok()))
}

/// macOS, the BSDs and the other Unixes: `getpeereid`, which rustix does
/// not bind; it gives no pid.
#[cfg(not(any(fdpass_linux_kernel, fdpass_solarish)))]
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, Option<u32>)> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: `uid` and `gid` are writable for the call.
    if unsafe { libc::getpeereid(socket.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((uid, gid, None))
}

/// A pidfd for the peer of a unix socket (`SO_PEERPIDFD`, Linux 6.5 and
/// later): the process that connected, which a reused pid cannot stand in
/// for. `None` where the kernel has none.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn peer_pidfd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    use std::os::fd::FromRawFd;
    /// `SO_PEERPIDFD` from `<asm-generic/socket.h>`; not in the libc crate
    /// for every architecture.
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is writable for `len` bytes, an int as the option is.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            std::ptr::from_mut(&mut fd).cast(),
            &raw mut len,
        )
    };
    if got != 0 {
        let err = io::Error::last_os_error();
        // ESRCH: the peer has exited, and no pidfd can name it.
        return match err.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::ESRCH) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: the kernel opened this pidfd for this process; only this
    // value owns it.
    Ok((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(not(fdpass_linux_kernel))]
pub(crate) fn peer_pidfd(_socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    Ok(None)
}

/// The id of this process's pidfd, which tells it apart from any earlier
/// process of the same pid (systemd's `LISTEN_PIDFDID`): the inode number
/// of a pidfd on pidfs (Linux 6.9 and later). `None` where there is none.
#[cfg(fdpass_linux_kernel)]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    /// `PID_FS_MAGIC` from `<linux/magic.h>`.
    const PID_FS_MAGIC: i64 = 0x5049_4446;

    let pidfd = crate::sys::pidfd_open(std::process::id()).ok()?;
    let fs = rustix::fs::fstatfs(&pidfd).ok()?;
    #[allow(clippy::unnecessary_cast, clippy::cast_lossless)] // its type varies
    if fs.f_type as i64 != PID_FS_MAGIC {
        return None;
    }
    Some(rustix::fs::fstat(&pidfd).ok()?.st_ino)
}

#[cfg(not(fdpass_linux_kernel))]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    None
}

/// `SO_PASSRIGHTS` (Linux 6.16 and later); not in the libc crate yet.
#[cfg(fdpass_passrights)]
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes the kernel refuse fds sent to `socket` (`SO_PASSRIGHTS` off), so
/// that a peer cannot fill this process's fd table through it. Returns
/// whether the kernel has the option.
#[cfg(fdpass_passrights)]
pub(crate) fn refuse_fds(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let off: libc::c_int = 0;
    // SAFETY: setsockopt reads an int from `off`, whose size is passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&raw const off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOPROTOOPT) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(fdpass_passrights))]
pub(crate) fn refuse_fds(_socket: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(false)
}
