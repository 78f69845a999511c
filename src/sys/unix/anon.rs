//! Files with no name, for bytes handed to another process through an fd:
//! a memfd where the system has one, else a file in the temporary
//! directory, unlinked as soon as it is made.

use std::io;
use std::os::fd::OwnedFd;

/// A close-on-exec, readable and writable file that no path names: a
/// memfd called `name` (Linux, Android, FreeBSD), or elsewhere a file of
/// mode 0600 made in [`std::env::temp_dir`] and unlinked at once.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn anonymous_file(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        name,
        rustix::fs::MemfdFlags::CLOEXEC,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn anonymous_file(name: &str) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    for attempt in 0..100 {
        let path = std::env::temp_dir().join(format!(".{name}-{}-{attempt}", std::process::id()));
        // `create_new` is O_EXCL: never a file or link someone else made.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file.into());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a temporary file",
    ))
}
