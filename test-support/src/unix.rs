//! Open fds, counted in `/proc`.

/// What the count is of, for failure messages.
pub const OPEN: &str = "fds";

pub fn open_count() -> usize {
    fd_count()
}

/// Whether an fd may still be counted after it is closed: never, since
/// `close` removes it from the table before it returns.
pub fn closes_late() -> bool {
    false
}

/// The open fds listed, for failure messages.
pub fn what_is_open() -> String {
    format!("; open now: {:?}", open_fds())
}

/// How many fds this process has open.
#[must_use]
pub fn fd_count() -> usize {
    // The directory's own fd is counted too, the same every time.
    count_in("/proc/self/fd")
}

/// How many fds the process `pid` has open.
#[must_use]
pub fn fd_count_of(pid: u32) -> usize {
    count_in(&format!("/proc/{pid}/fd"))
}

fn count_in(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .count()
}

/// What each open fd of this process refers to, for failure messages.
#[must_use]
pub fn open_fds() -> Vec<String> {
    listed_in("/proc/self/fd")
}

/// What each open fd of the process `pid` refers to, for failure messages.
#[must_use]
pub fn open_fds_of(pid: u32) -> Vec<String> {
    listed_in(&format!("/proc/{pid}/fd"))
}

fn listed_in(dir: &str) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

/// Turns Linux's `SO_PASSPIDFD` (6.5 and later) on or off on `socket`:
/// with it on, the kernel adds a pidfd of the sender to each message
/// received. A raw call, as neither std nor rustix has the option; a
/// kernel without it refuses it (`ENOPROTOOPT`).
///
/// # Errors
///
/// The error of `setsockopt(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn set_pass_pidfd(socket: std::os::fd::BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `SO_PASSPIDFD` from `<asm-generic/socket.h>`.
    const SO_PASSPIDFD: libc::c_int = 76;
    let on = libc::c_int::from(on);
    // SAFETY: an int option of the size given, read for the call only.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSPIDFD,
            std::ptr::from_ref(&on).cast(),
            size_of_val(&on) as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
