//! Connecting to a unix socket by its path or abstract name, without ever
//! waiting on its listener, and with a grace period for one still starting.

use std::ffi::OsStr;
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::{sys, Deadline};

/// Connects to the unix socket at `address`, a path or on Linux `@name` for
/// a name in the abstract namespace, in one non-blocking `connect(2)`.
///
/// Unlike [`UnixStream::connect`], it never waits: a listener whose
/// backlog is full gives [`ErrorKind::WouldBlock`] at once, where a
/// blocking connect waits for as long as the listener does not accept,
/// which a hostile listener can make forever. The stream it returns is
/// blocking and close-on-exec. [`connect_unix_retrying`] tries again by a
/// deadline.
///
/// # Errors
///
/// The error of `connect(2)`: [`NotFound`](ErrorKind::NotFound) for no
/// socket at a path, [`ConnectionRefused`](ErrorKind::ConnectionRefused)
/// for one that nothing listens on, [`PermissionDenied`](ErrorKind::PermissionDenied),
/// [`WouldBlock`](ErrorKind::WouldBlock) for a full backlog, and
/// [`InvalidInput`](ErrorKind::InvalidInput) for a path too long for a
/// socket address, or one where there is something other than a socket
/// (the message says what: "a regular file, not a socket").
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
/// let stream = io_fdpass::connect_unix(&path)?;
/// # drop((stream, listener));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect_unix(address: impl AsRef<OsStr>) -> io::Result<UnixStream> {
    let address = address.as_ref();
    sys::connect_unix(address)
        .map(Into::into)
        .map_err(|err| match err.kind() {
            // The kernel refuses a connection to a file or a directory as
            // it does one to a socket that nothing listens on.
            ErrorKind::ConnectionRefused => not_a_socket(address).unwrap_or(err),
            _ => err,
        })
}

/// `InvalidInput` saying what is at `address` if it is a path to something
/// other than a socket.
fn not_a_socket(address: &OsStr) -> Option<io::Error> {
    use std::os::unix::fs::FileTypeExt;
    if address.as_encoded_bytes().starts_with(b"@") {
        return None;
    }
    let kind = std::fs::metadata(address).ok()?.file_type();
    let what = if kind.is_socket() {
        return None;
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "something else"
    };
    Some(io::Error::new(
        ErrorKind::InvalidInput,
        format!("{} is {what}, not a socket", address.to_string_lossy()),
    ))
}

/// Connects to the unix socket at `address` as [`connect_unix`] does,
/// trying again every few milliseconds while the listener's backlog is
/// full, until `deadline`, and while nothing listens there, for up to
/// `startup_grace` (and never past `deadline`): for a listener that was
/// started a moment ago, in the background, and may not be listening yet.
///
/// # Errors
///
/// - [`ErrorKind::TimedOut`] when the backlog is still full at the
///   deadline;
/// - [`ErrorKind::NotFound`] or [`ErrorKind::ConnectionRefused`] when
///   nothing listens at `address` once the grace period is over; the
///   message says where;
/// - and any other error of [`connect_unix`], at once, its message saying
///   where.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use io_fdpass::Deadline;
///
/// let dir = std::env::temp_dir().join(format!("io-fdpass-doc-retry-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("late.sock");
/// let listen_at = path.clone();
/// let late = std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(20));
///     std::os::unix::net::UnixListener::bind(listen_at)
/// });
/// let deadline = Deadline::after(Duration::from_secs(5));
/// let stream = io_fdpass::connect_unix_retrying(&path, deadline, Duration::from_secs(5))?;
/// # drop((stream, late.join().unwrap()?));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect_unix_retrying(
    address: impl AsRef<OsStr>,
    deadline: Deadline,
    startup_grace: Duration,
) -> io::Result<UnixStream> {
    let address = address.as_ref();
    let grace = Deadline::at(Instant::now() + startup_grace).min(deadline);
    loop {
        let err = match connect_unix(address) {
            Ok(stream) => return Ok(stream),
            Err(err) => err,
        };
        if !again(err.kind(), grace, deadline) {
            return Err(gave_up(address, &err));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a connect that failed with `kind` is tried again.
fn again(kind: ErrorKind, grace: Deadline, deadline: Deadline) -> bool {
    match kind {
        ErrorKind::WouldBlock => !deadline.passed(),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => !grace.passed(),
        _ => false,
    }
}

/// The error of the last try at `address`, saying where.
fn gave_up(address: &OsStr, err: &io::Error) -> io::Error {
    let address = address.to_string_lossy();
    match err.kind() {
        ErrorKind::WouldBlock => io::Error::new(
            ErrorKind::TimedOut,
            format!("the listener at {address} accepted no connection in time"),
        ),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => io::Error::new(
            err.kind(),
            format!("nothing is listening at {address} ({err})"),
        ),
        kind => io::Error::new(kind, format!("cannot connect to {address}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_backlog_or_an_absent_listener_is_tried_again() {
        let past = Deadline::at(Instant::now());
        let future = Deadline::after(Duration::from_secs(3600));
        assert!(again(ErrorKind::WouldBlock, past, future));
        assert!(!again(ErrorKind::WouldBlock, future, past));
        for absent in [ErrorKind::NotFound, ErrorKind::ConnectionRefused] {
            assert!(again(absent, future, future));
            assert!(!again(absent, past, future));
        }
        assert!(!again(ErrorKind::PermissionDenied, future, future));
        assert!(!again(ErrorKind::InvalidInput, future, future));
    }

    #[test]
    fn errors_say_where() {
        let address = OsStr::new("/run/x.sock");
        let full = gave_up(address, &ErrorKind::WouldBlock.into());
        assert_eq!(full.kind(), ErrorKind::TimedOut);
        assert!(full.to_string().contains("/run/x.sock"), "{full}");
        let absent = gave_up(address, &ErrorKind::ConnectionRefused.into());
        assert_eq!(absent.kind(), ErrorKind::ConnectionRefused);
        assert!(
            absent
                .to_string()
                .starts_with("nothing is listening at /run/x.sock"),
            "{absent}"
        );
        let denied = gave_up(address, &ErrorKind::PermissionDenied.into());
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert!(denied.to_string().contains("/run/x.sock"), "{denied}");
    }

    #[test]
    fn a_file_or_a_directory_is_not_a_socket() {
        let deadline = Deadline::after(Duration::from_secs(3600));
        let file =
            std::env::temp_dir().join(format!("io-fdpass-not-a-socket-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        for (path, what) in [
            (file.as_path(), "is a regular file, not a socket"),
            (std::path::Path::new("/"), "/ is a directory, not a socket"),
            (std::path::Path::new("/dev/null"), "is a character device"),
        ] {
            let err = connect_unix(path).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(what), "{err}");
            // Not tried again for the grace either.
            let err = connect_unix_retrying(path, deadline, Duration::from_secs(3600)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn nothing_listening_is_told_once_the_grace_is_over() {
        let address =
            std::env::temp_dir().join(format!("io-fdpass-no-listener-{}.sock", std::process::id()));
        let deadline = Deadline::after(Duration::from_secs(3600));
        let err = connect_unix_retrying(&address, deadline, Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
}
