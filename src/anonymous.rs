//! Files with no name, for bytes handed to another process through an fd.

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;

use crate::sys;

/// A file that no path names, readable, writable and close-on-exec: for
/// bytes handed to another process through an fd, as
/// [`restart::Restart::state`](crate::restart::Restart::state) hands its
/// state, or kept in systemd's fd store
/// ([`notify::store_fds`](crate::notify::store_fds)) across a crash.
///
/// A memfd called `name` (`memfd_create(2)`, with `MFD_CLOEXEC`) on Linux,
/// Android and FreeBSD; elsewhere a file of mode 0600 created with
/// `O_EXCL` in [`std::env::temp_dir`], under a name that begins with
/// `.name-`, and unlinked at once. Either way the file goes when its last
/// fd is closed. Every copy of the fd shares one file offset: a reader in
/// another process is best served by `pread(2)`
/// ([`std::os::unix::fs::FileExt::read_at`]).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for a `name` with a `/` or a NUL byte, or
/// (Linux) longer than 249 bytes; the error of `memfd_create(2)` or of
/// creating the file (`EMFILE`, `ENOSPC`, …);
/// [`ErrorKind::AlreadyExists`] when a hundred names in the temporary
/// directory are taken.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::unix::fs::FileExt;
///
/// # fn main() -> std::io::Result<()> {
/// let mut file = std::fs::File::from(io_fdpass::anonymous_file("counts")?);
/// file.write_all(b"42")?;
/// // The fd can go to another process now: send_fd, Restart::fd,
/// // notify::store_fds. This one reads it back.
/// let mut read = [0; 2];
/// file.read_exact_at(&mut read, 0)?;
/// assert_eq!(&read, b"42");
/// # Ok(())
/// # }
/// ```
pub fn anonymous_file(name: &str) -> io::Result<OwnedFd> {
    if name.contains(['/', '\0']) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} cannot name a file: it holds a / or a NUL byte"),
        ));
    }
    sys::anonymous_file(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_could_be_a_path_is_refused() {
        for name in ["../escape", "a/b", "nul\0"] {
            let e = anonymous_file(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}: {e}");
        }
    }

    #[test]
    fn the_file_is_close_on_exec_and_keeps_what_is_written() {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let fd = anonymous_file("io-fdpass-test").unwrap();
        assert!(rustix::io::fcntl_getfd(&fd)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
        let mut file = std::fs::File::from(fd);
        file.write_all(b"kept").unwrap();
        let mut read = [0; 4];
        file.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(&read, b"kept");
    }
}
