//! systemd's notify protocol: telling the service manager that this
//! service is ready, and keeping fds in its fd store, over the datagram
//! socket named by `$NOTIFY_SOCKET`; and its other end, a [`Listener`] for
//! a program that starts another and waits until it is ready. Under
//! systemd, [`Handover`] makes the process so started the service's main
//! process (`MAINPID=`), as [`restart`](crate::restart) and `fdpass adopt`
//! do.
//!
//! systemd hands what a service put in its fd store back to the next start
//! of the service as `LISTEN_FDS`, with the names given here in
//! `LISTEN_FDNAMES` (see [`activation`](crate::activation)); a unit needs
//! `FileDescriptorStoreMax=` for it to keep any. Each call here returns
//! `Ok(false)` and sends nothing when `$NOTIFY_SOCKET` is not set, as when
//! the program does not run under systemd, so a program can call them
//! unconditionally. No call waits for the service manager: one that has
//! stopped reading gives [`ErrorKind::WouldBlock`] at once.
//!
//! # Examples
//!
//! ```no_run
//! use std::os::fd::AsFd;
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//! // Kept by systemd across restarts of the service, even after a crash.
//! io_fdpass::notify::store_fds("http", &[listener.as_fd()])?;
//! io_fdpass::notify::ready()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::os::fd::BorrowedFd;

use crate::sys;

mod handover;
mod listener;

pub use crate::names::{check_name, MAX_NAME};
pub use handover::{Handover, READY_SOCKET};
pub use listener::{Listener, Notification, MAX_DATAGRAM};

/// `READY=1`: the service has started, and is ready to serve. It is also
/// how the next generation of a server started by
/// [`Restart::spawn`](crate::restart::Restart::spawn), or a command started
/// by `fdpass adopt --stop-old`, tells the process waiting on a
/// [`Listener`] to go.
///
/// The first call in a process started with [`READY_SOCKET`] set says it
/// on that socket instead of `$NOTIFY_SOCKET`: the process that waits there
/// tells the service manager, with `MAINPID=` this process (see
/// [`Handover`]). Every later call, and every call in a process started
/// without it, says it on `$NOTIFY_SOCKET`, as does a process that the
/// service manager started itself.
///
/// # Errors
///
/// The error of sending the datagram: the socket named by
/// `$NOTIFY_SOCKET` is missing ([`ErrorKind::NotFound`]), refuses this
/// process, has a full queue because its reader has stalled
/// ([`ErrorKind::WouldBlock`]: no call here ever waits for the service
/// manager), …
pub fn ready() -> io::Result<bool> {
    if let Some(waiter) = ready_socket_once() {
        return waiter
            .send(&Message::Ready.text()?, &[])
            .map(|()| true)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot tell the process that started this one ({READY_SOCKET}): {e}"),
                )
            });
    }
    send(Message::Ready, &[])
}

/// The socket named by [`READY_SOCKET`] the first time this is called in
/// this process, `None` afterwards: a process tells the one that started
/// it once, and its later `READY=1`s are the service manager's.
fn ready_socket_once() -> Option<Notifier> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TOLD: AtomicBool = AtomicBool::new(false);
    let socket = std::env::var_os(READY_SOCKET).filter(|path| !path.is_empty())?;
    (!TOLD.swap(true, Ordering::SeqCst)).then(|| Notifier::new(socket))
}

/// `FDSTORE=1` with `FDNAME=name`: asks systemd to keep `fds` under `name`
/// in the service's fd store.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`], with nothing sent, for a name that
/// systemd would refuse (see [`check_name`]) or no fds; otherwise as
/// [`ready`].
pub fn store_fds(name: &str, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    check_name(name)?;
    if fds.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "FDSTORE=1 needs at least one fd",
        ));
    }
    send(Message::Store(name), fds)
}

/// `FDSTOREREMOVE=1` with `FDNAME=name`: asks systemd to close the fds it
/// keeps under `name`.
///
/// # Errors
///
/// As [`store_fds`].
pub fn remove_fds(name: &str) -> io::Result<bool> {
    send(Message::Remove(name), &[])
}

/// Sends `message` with `fds` to `$NOTIFY_SOCKET`: `Ok(false)` when it is
/// unset.
fn send(message: Message<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    let text = message.text()?;
    from_env().map_or(Ok(false), |to| to.send(&text, fds).map(|()| true))
}

/// A message of the notify protocol, as [`ready`], [`store_fds`] and
/// [`remove_fds`] send it. Pure, so that the text is tested (and fuzzed)
/// apart from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `READY=1`.
    Ready,
    /// `FDSTORE=1` with `FDNAME=` the name.
    Store(&'a str),
    /// `FDSTOREREMOVE=1` with `FDNAME=` the name.
    Remove(&'a str),
    /// `RELOADING=1` with `MONOTONIC_USEC=` the time the reload began, in
    /// microseconds of `CLOCK_MONOTONIC`.
    Reloading(u64),
    /// `MAINPID=` the pid with `READY=1`: that process is the service's
    /// main process now, and ready.
    MainPid(u32),
}

impl Message<'_> {
    /// The datagram's text, one assignment a line: [`ErrorKind::InvalidInput`]
    /// for a name that systemd would refuse (see [`check_name`]), which
    /// could otherwise add lines of its own.
    pub(crate) fn text(self) -> io::Result<String> {
        Ok(match self {
            Message::Ready => "READY=1".to_owned(),
            Message::Store(name) => {
                check_name(name)?;
                format!("FDSTORE=1\nFDNAME={name}")
            }
            Message::Remove(name) => {
                check_name(name)?;
                format!("FDSTOREREMOVE=1\nFDNAME={name}")
            }
            Message::Reloading(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
            Message::MainPid(pid) => format!("MAINPID={pid}\nREADY=1"),
        })
    }
}

/// The assignments of a notify datagram as the service manager reads
/// them: one a line, split at its first `=` into a name and a value; a
/// line without `=` assigns nothing.
pub(crate) fn assignments(datagram: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    datagram.split(|&b| b == b'\n').filter_map(|line| {
        let at = line.iter().position(|&b| b == b'=')?;
        Some((&line[..at], &line[at + 1..]))
    })
}

/// Whether a notify datagram says `READY=1`.
pub(crate) fn says_ready(datagram: &[u8]) -> bool {
    assignments(datagram).any(|assignment| assignment == (b"READY", b"1"))
}

/// A notify socket: where `$NOTIFY_SOCKET` points, or any other.
#[derive(Debug, Clone)]
pub struct Notifier {
    address: OsString,
}

impl Notifier {
    /// The socket at `address`: a path, or on Linux `@name` for a name in
    /// the abstract namespace (how systemd writes one in `$NOTIFY_SOCKET`).
    pub fn new(address: impl AsRef<OsStr>) -> Notifier {
        Notifier {
            address: address.as_ref().to_owned(),
        }
    }

    /// The socket `$NOTIFY_SOCKET` names; `None` when it is unset or
    /// empty.
    #[must_use]
    pub fn from_env() -> Option<Notifier> {
        from_env()
    }

    /// Sends `text` (assignments such as `READY=1`, one per line) with
    /// `fds` attached, in one datagram, with `sendmsg(2)` and
    /// `MSG_DONTWAIT`: it never waits, so a service manager that has
    /// stopped reading cannot stall the caller.
    ///
    /// # Errors
    ///
    /// The error of sending it, as [`ready`]; [`ErrorKind::WouldBlock`],
    /// with nothing sent, when the socket's queue is full because its
    /// reader is not reading. Whether to send again later is the caller's
    /// choice.
    pub fn send(&self, text: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        sys::send_datagram(&self.address, text.as_bytes(), fds).map_err(|e| {
            let address = self.address.to_string_lossy();
            let message = if e.kind() == ErrorKind::WouldBlock {
                format!("cannot notify the service manager at {address}: its queue is full (it is not reading); nothing was sent")
            } else {
                format!("cannot notify the service manager at {address}: {e}")
            };
            io::Error::new(e.kind(), message)
        })
    }
}

fn from_env() -> Option<Notifier> {
    std::env::var_os("NOTIFY_SOCKET")
        .filter(|address| !address.is_empty())
        .map(Notifier::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_a_line_of_its_own() {
        assert!(says_ready(b"READY=1"));
        assert!(says_ready(b"STATUS=up\nREADY=1\n"));
        for not in [
            &b"READY=10"[..],
            b"READY=0",
            b"NOTREADY=1",
            b"READY=1x",
            b"",
            b"\xff",
        ] {
            assert!(!says_ready(not), "{not:?}");
        }
    }

    #[test]
    fn each_message_reads_back_as_its_assignments() {
        let read = |message: Message<'_>| -> Vec<(String, String)> {
            let text = message.text().unwrap();
            assignments(text.as_bytes())
                .map(|(k, v)| {
                    let k = String::from_utf8(k.to_vec()).unwrap();
                    (k, String::from_utf8(v.to_vec()).unwrap())
                })
                .collect()
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(read(Message::Ready), [pair("READY", "1")]);
        assert_eq!(
            read(Message::Store("a=b")),
            [pair("FDSTORE", "1"), pair("FDNAME", "a=b")]
        );
        assert_eq!(
            read(Message::Remove("web")),
            [pair("FDSTOREREMOVE", "1"), pair("FDNAME", "web")]
        );
        assert_eq!(
            read(Message::Reloading(1_234_567)),
            [pair("RELOADING", "1"), pair("MONOTONIC_USEC", "1234567")]
        );
        // One datagram: systemd moves the main pid, then takes READY=1.
        assert_eq!(
            read(Message::MainPid(42)),
            [pair("MAINPID", "42"), pair("READY", "1")]
        );
        let e = Message::Store("x\nREADY=1").text().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
