//! Making a socket file in a directory that others may write to, without
//! ever acting on a path that can change under this process.
//!
//! `bind(2)` makes the socket in a new private directory (mode 0700, owned
//! by this process, beside the final path so that both are on one
//! filesystem); its mode and group are set there, by `fchmodat` and
//! `fchownat` relative to that directory's fd, where nobody else can reach
//! it; then `linkat(2)` puts it at the final name, which it never
//! replaces and which never follows a symlink. A stale socket at the final
//! path is first moved into the private directory by `renameat(2)`, and
//! removed there only once it is seen to be the very socket (device and
//! inode) found stale: whatever else another user swapped in meanwhile is
//! put back, never removed. The private directory is removed at the end.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Access, SocketName, MAX_NAME};
use crate::fail::{self, Failure, Result};

/// The socket's name inside the private directory.
const INNER: &str = "s";
/// Where a stale socket is moved to be checked, inside the private
/// directory.
const STALE: &str = "stale";
/// How many times a path that keeps changing is looked at again.
const TRIES: usize = 4;

/// A socket file made at a path: its listener, and the device and inode
/// of the file.
pub(super) struct Made {
    pub listener: UnixListener,
    pub identity: (u64, u64),
}

/// Listens at `path` with `access`; see the module's docs for how. A
/// stale socket at the path is replaced; anything else is refused.
pub(super) fn bind(name: &SocketName, path: &Path, access: Option<&Access>) -> Result<Made> {
    let (parent, file) = split(name, path)?;
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| {
        Failure::os(
            format_args!("cannot open the directory of {name}"),
            err.into(),
        )
    })?;
    let private = Private::make(&dir, parent).map_err(|err| {
        Failure::os(
            format_args!("cannot make a private directory beside {name}"),
            err,
        )
    })?;
    let listener = private
        .bind(access.is_some())
        .map_err(|err| match err.kind() {
            ErrorKind::AddrInUse => Failure::new(
                fail::CANT_CREATE,
                format!("cannot listen at {name}: another socket is already listening there"),
            ),
            _ => Failure::os(format_args!("cannot listen at {name}"), err),
        })?;
    let made = rustix::fs::statat(&private.fd, INNER, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
        .and_then(|stat| {
            if FileType::from_raw_mode(stat.st_mode) == FileType::Socket {
                Ok(identity(&stat))
            } else {
                Err(io::Error::other("the private directory was tampered with"))
            }
        })
        .map_err(|err| Failure::os(format_args!("cannot listen at {name}"), err))?;
    if let Some(access) = access {
        private.apply(access).map_err(|err| {
            Failure::os(format_args!("cannot set the mode and group of {name}"), err)
        })?;
    }
    place(name, path, &dir, file, &private)?;
    Ok(Made {
        listener,
        identity: made,
    })
}

/// The directory of `path` (`.` for a bare name) and its last component.
fn split<'a>(name: &SocketName, path: &'a Path) -> Result<(&'a Path, &'a OsStr)> {
    let file = path.file_name().ok_or_else(|| {
        Failure::new(
            fail::USAGE,
            format!("{name} does not end in a file name: name the socket file"),
        )
    })?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Ok((parent, file))
}

/// A directory that only this process can reach, removed when dropped,
/// with what is left in it but a stale entry that could not be put back.
struct Private<'a> {
    parent: &'a OwnedFd,
    parent_path: &'a Path,
    name: String,
    fd: OwnedFd,
}

impl<'a> Private<'a> {
    /// Makes one, under a random name in `parent`.
    fn make(parent: &'a OwnedFd, parent_path: &'a Path) -> io::Result<Private<'a>> {
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0..16_u32 {
            let name = format!(
                ".fdp{:08x}",
                random.hash_one((std::process::id(), attempt)) & 0xffff_ffff
            );
            match rustix::fs::mkdirat(parent, name.as_str(), Mode::RWXU) {
                Err(Errno::EXIST) => continue,
                Err(err) => return Err(err.into()),
                Ok(()) => {}
            }
            let fd = rustix::fs::openat(
                parent,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let stat = rustix::fs::fstat(&fd)?;
            if stat.st_uid != rustix::process::geteuid().as_raw()
                || stat.st_mode & 0o077 != 0
                || FileType::from_raw_mode(stat.st_mode) != FileType::Directory
            {
                return Err(io::Error::other(format!(
                    "{name} was replaced by another user's as it was made"
                )));
            }
            return Ok(Private {
                parent,
                parent_path,
                name,
                fd,
            });
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "every name tried was taken",
        ))
    }

    /// Binds a socket inside, with mode 0600 at most if `restricted`.
    fn bind(&self, restricted: bool) -> io::Result<UnixListener> {
        let path = self.bind_path()?;
        let mask = restricted.then(|| rustix::process::umask(Mode::from(0o177)));
        let bound = UnixListener::bind(path);
        if let Some(mask) = mask {
            rustix::process::umask(mask);
        }
        bound
    }

    /// A path of the socket inside that fits in `sun_path`: by way of the
    /// directory's path, or on Linux of its fd.
    fn bind_path(&self) -> io::Result<PathBuf> {
        let path = self.parent_path.join(&self.name).join(INNER);
        if path.as_os_str().as_bytes().len() <= MAX_NAME {
            return Ok(path);
        }
        #[cfg(fdpass_abstract_names)]
        {
            use std::os::fd::AsRawFd;
            Ok(PathBuf::from(format!(
                "/proc/self/fd/{}/{INNER}",
                self.fd.as_raw_fd()
            )))
        }
        #[cfg(not(fdpass_abstract_names))]
        Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the path is too long for a socket to be made beside it: use a shorter one",
        ))
    }

    /// Sets the socket's group and mode, where nobody else can reach it.
    fn apply(&self, access: &Access) -> io::Result<()> {
        if let Some(gid) = access.group {
            let gid = rustix::process::Gid::from_raw(gid);
            rustix::fs::chownat(&self.fd, INNER, None, Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        let mode = Mode::from_raw_mode(access.mode as rustix::fs::RawMode);
        rustix::fs::chmodat(&self.fd, INNER, mode, AtFlags::empty())?;
        Ok(())
    }
}

impl Drop for Private<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&self.fd, INNER, AtFlags::empty());
        let _ = rustix::fs::unlinkat(self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
    }
}

/// Puts the socket at `file` in `dir`: where nothing is, or in place of a
/// stale socket.
fn place(
    name: &SocketName,
    path: &Path,
    dir: &OwnedFd,
    file: &OsStr,
    private: &Private<'_>,
) -> Result<()> {
    let inspect = |err: Errno| Failure::os(format_args!("cannot inspect {name}"), err.into());
    for _ in 0..TRIES {
        let stat = match rustix::fs::statat(dir, file, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => {
                match rustix::fs::linkat(&private.fd, INNER, dir, file, AtFlags::empty()) {
                    Err(Errno::EXIST) => continue,
                    Err(err) => {
                        return Err(Failure::os(
                            format_args!("cannot put the socket at {name}"),
                            err.into(),
                        ))
                    }
                    Ok(()) => return Ok(()),
                }
            }
            Err(err) => return Err(inspect(err)),
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
            return Err(Failure::new(
                fail::CANT_CREATE,
                format!("{name} exists and is not a socket; refusing to replace it"),
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Failure::new(
                    fail::CANT_CREATE,
                    format!(
                        "another process is listening at {name}; stop it or choose another path"
                    ),
                ))
            }
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => {}
            Err(err) => return Err(Failure::os(format_args!("cannot inspect {name}"), err)),
        }
        remove_stale(name, dir, file, private, identity(&stat))?;
    }
    Err(Failure::new(
        fail::CANT_CREATE,
        format!("{name} kept changing as the socket was put there: try again"),
    ))
}

/// Removes the stale socket `stale` at `file`: moved into the private
/// directory, and removed there only if it is still that socket. What
/// was swapped in instead is put back, and refused.
fn remove_stale(
    name: &SocketName,
    dir: &OwnedFd,
    file: &OsStr,
    private: &Private<'_>,
    stale: (u64, u64),
) -> Result<()> {
    match rustix::fs::renameat(dir, file, &private.fd, STALE) {
        Err(Errno::NOENT) => return Ok(()),
        Err(err) => {
            return Err(Failure::os(
                format_args!("cannot remove the stale socket {name}"),
                err.into(),
            ))
        }
        Ok(()) => {}
    }
    let moved = rustix::fs::statat(&private.fd, STALE, AtFlags::SYMLINK_NOFOLLOW);
    if matches!(&moved, Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Socket && identity(stat) == stale)
    {
        return rustix::fs::unlinkat(&private.fd, STALE, AtFlags::empty()).map_err(|err| {
            Failure::os(
                format_args!("cannot remove the stale socket {name}"),
                err.into(),
            )
        });
    }
    let back = rustix::fs::linkat(&private.fd, STALE, dir, file, AtFlags::empty())
        .and_then(|()| rustix::fs::unlinkat(&private.fd, STALE, AtFlags::empty()));
    let kept = private.parent_path.join(&private.name).join(STALE);
    Err(Failure::new(
        fail::CANT_CREATE,
        match back {
            Ok(()) => format!("{name} was replaced by something else as it was checked; refusing to replace it"),
            Err(_) => format!(
                "{name} was replaced by something else as it was checked, which could not be put back: it is at {}; refusing to replace it",
                kept.display()
            ),
        },
    ))
}

/// A file's device and inode.
fn identity(stat: &rustix::fs::Stat) -> (u64, u64) {
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    (stat.st_dev as u64, stat.st_ino as u64)
}

/// What a private directory holds, for the tests.
#[cfg(test)]
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fdpass-bind-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn refused(result: Result<Made>) -> Failure {
        match result {
            Ok(_) => panic!("listened where it should have refused"),
            Err(failure) => failure,
        }
    }

    fn listen(path: &Path, access: Option<&Access>) -> Result<Made> {
        let name = SocketName::Path(path.to_owned());
        bind(&name, path, access)
    }

    #[test]
    fn a_symlink_at_the_path_is_refused_and_its_target_untouched() {
        let dir = temp("symlink");
        let target = dir.join("target");
        std::fs::write(&target, "kept").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = std::fs::metadata(&target).unwrap();
        let path = dir.join("h.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let access = Access {
            mode: 0o666,
            group: Some(65534),
        };
        let failure = refused(listen(&path, Some(&access)));
        assert!(failure.message.contains("not a socket"), "{failure:?}");
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(after.mode(), before.mode());
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(std::fs::read_link(&path).unwrap(), target);
        assert_eq!(entries(&dir), ["h.sock", "target"], "left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_socket_gets_its_mode_and_group_before_it_appears() {
        let dir = temp("mode");
        let path = dir.join("h.sock");
        let access = Access {
            mode: 0o640,
            group: Some(65534),
        };
        let made = listen(&path, Some(&access)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(meta.gid(), 65534);
        assert_eq!(meta.nlink(), 1);
        assert_eq!(made.identity, (meta.dev(), meta.ino()));
        assert_eq!(entries(&dir), ["h.sock"], "the private directory was left");
        drop(made);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_of_the_longest_length_is_bound() {
        let dir = temp("long");
        let room = MAX_NAME - dir.as_os_str().len() - "/h.sock".len() - 1;
        let deep = dir.join("d".repeat(room));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join("h.sock");
        assert_eq!(path.as_os_str().len(), MAX_NAME);
        let made = listen(&path, None).unwrap();
        UnixStream::connect(&path).unwrap();
        assert_eq!(entries(&deep), ["h.sock"]);
        drop(made);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = temp("stale");
        let path = dir.join("h.sock");
        let live = UnixListener::bind(&path).unwrap();
        let failure = refused(listen(&path, None));
        assert!(failure.message.contains("listening"), "{failure:?}");
        drop(live);
        let old = std::fs::symlink_metadata(&path).unwrap().ino();
        let made = listen(&path, None).unwrap();
        assert_ne!(made.identity.1, old);
        UnixStream::connect(&path).unwrap();
        assert_eq!(entries(&dir), ["h.sock"]);
        drop(made);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_replaced_a_stale_socket_is_put_back() {
        let dir = temp("swap");
        let dir_fd =
            rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let private = Private::make(&dir_fd, &dir).unwrap();
        let path = dir.join("h.sock");
        let target = dir.join("target");
        std::fs::write(&target, "kept").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let name = SocketName::Path(path.clone());
        // The stale socket seen was another file than what is there now.
        let failure = remove_stale(&name, &dir_fd, OsStr::new("h.sock"), &private, (0, 0))
            .expect_err("refused");
        assert!(failure.message.contains("replaced"), "{failure:?}");
        assert_eq!(std::fs::read_link(&path).unwrap(), target);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
        drop(private);
        assert_eq!(entries(&dir), ["h.sock", "target"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
