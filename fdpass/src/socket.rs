//! Unix socket names: a path, or `@name` in Linux's abstract namespace.

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::fail::{self, Failure, Result};

/// How long a client waits for a peer that is not listening yet.
pub const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// Where a unix socket lives.
#[derive(Clone, Debug)]
pub enum SocketName {
    Path(PathBuf),
    /// Linux's abstract namespace: no file, gone when the last socket closes.
    Abstract(String),
}

impl FromStr for SocketName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix('@') {
            Some("") => Err("an abstract socket name needs text after '@'".into()),
            Some(name) if cfg!(fdpass_abstract_names) => Ok(SocketName::Abstract(name.into())),
            Some(_) => Err("abstract socket names ('@name') exist only on Linux".into()),
            None if s.is_empty() => Err("the socket path is empty".into()),
            None => Ok(SocketName::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketName::Path(path) => write!(f, "{}", path.display()),
            SocketName::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl SocketName {
    /// Connects to a listening socket; `what` says who should be listening,
    /// for the error message. A peer started a moment ago in the background
    /// (`fdpass hold SOCKET &`) may not be listening yet: for up to
    /// [`STARTUP_GRACE`] a missing or refusing socket is tried again.
    pub fn connect(&self, what: &str) -> Result<UnixStream> {
        let deadline = Instant::now() + STARTUP_GRACE;
        loop {
            let result = match self {
                SocketName::Path(path) => UnixStream::connect(path),
                SocketName::Abstract(name) => {
                    abstract_addr(name).and_then(|a| UnixStream::connect_addr(&a))
                }
            };
            let err = match result {
                Ok(stream) => return Ok(stream),
                Err(err) => err,
            };
            let absent = matches!(
                err.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused
            );
            if absent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            return Err(if absent {
                Failure::new(
                    fail::UNAVAILABLE,
                    format!("nothing is listening at {self} ({err}): is {what} running?"),
                )
            } else {
                Failure::os(format_args!("cannot connect to {self}"), err)
            });
        }
    }

    /// Listens at this name. A socket file left behind by a process that
    /// has gone is replaced; anything else at the path is refused.
    pub fn listen(&self) -> Result<Listening> {
        let listener = match self {
            SocketName::Path(path) => {
                clear_stale(self, path)?;
                UnixListener::bind(path)
            }
            SocketName::Abstract(name) => {
                abstract_addr(name).and_then(|a| UnixListener::bind_addr(&a))
            }
        };
        let listener = listener.map_err(|err| match err.kind() {
            ErrorKind::AddrInUse => Failure::new(
                fail::CANT_CREATE,
                format!("cannot listen at {self}: another socket is already listening there"),
            ),
            _ => Failure::os(format_args!("cannot listen at {self}"), err),
        })?;
        let file = match self {
            SocketName::Path(path) => Some(path.clone()),
            SocketName::Abstract(_) => None,
        };
        Ok(Listening {
            listener,
            file: SocketFile(file),
        })
    }
}

#[cfg(fdpass_abstract_names)]
fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(fdpass_abstract_names))]
fn abstract_addr(_: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::new(
        ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// Removes a socket file at `path` that no process listens on any more.
fn clear_stale(name: &SocketName, path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Failure::os(format_args!("cannot inspect {name}"), err)),
    };
    if !meta.file_type().is_socket() {
        return Err(Failure::new(
            fail::CANT_CREATE,
            format!("{name} exists and is not a socket; refusing to replace it"),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(Failure::new(
            fail::CANT_CREATE,
            format!("another process is listening at {name}; stop it or choose another path"),
        )),
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|err| Failure::os(format_args!("cannot remove the stale socket {name}"), err)),
        Err(err) => Err(Failure::os(format_args!("cannot inspect {name}"), err)),
    }
}

/// A listening socket; its file, if it has one, is removed when dropped.
pub struct Listening {
    pub listener: UnixListener,
    file: SocketFile,
}

impl Listening {
    /// The socket file, if the socket has one.
    pub fn path(&self) -> Option<&Path> {
        self.file.0.as_deref()
    }

    /// The listener, its file left in place for whoever gets the listener.
    pub fn keep(self) -> UnixListener {
        let Listening { listener, mut file } = self;
        file.0 = None;
        listener
    }
}

/// A socket file that this process made, removed when dropped.
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
