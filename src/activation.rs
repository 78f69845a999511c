//! Adopting the fds a program is started with under the socket-activation
//! convention: `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`, as systemd,
//! `systemd-socket-activate`, `fdpass listen`, `fdpass fetch` and
//! `systemfd` set them.
//!
//! The convention: the fds are 3, 4, … (`LISTEN_FDS` of them), meant for
//! the process whose pid is `LISTEN_PID`, and `LISTEN_FDNAMES` names them,
//! separated by colons. systemd 257 and later also set `LISTEN_PIDFDID`,
//! which tells the process apart from an earlier one of the same pid;
//! `systemfd` sets `LISTEN_FDS_FIRST_FD` where the fds start elsewhere than
//! at 3. [`ListenFds::take`] reads all of them, once.
//!
//! [`Command`] is the starting side: it runs a program with fds laid out
//! that way, as a child ([`Command::spawn`], whose `LISTEN_PID` is the
//! child's own pid) or in place of this process ([`Command::exec`]), and
//! [`find_program`] finds a program in `PATH` as the shell does.
//!
//! # The environment is left alone
//!
//! [`ListenFds::take`] reads the variables and never changes them: removing
//! a variable while another thread reads the environment is a data race
//! (C code that calls `getenv` does not expect it). They stay as they were,
//! which is harmless: a child of this process has another pid, so it takes
//! none of them, and [`Command`] passes none of them on. Only the first
//! take in a process looks at them at all.
//!
//! `take` does mark the fds close-on-exec, which is process-wide: call it
//! early in `main`, before a thread can `fork` and `exec` a child that
//! would inherit the fds before they are marked.
//!
//! # Examples
//!
//! A tokio server that takes its listener from whoever started it, or binds
//! one of its own:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn serve() -> std::io::Result<()> {
//! use io_fdpass::activation::ListenFds;
//!
//! let mut fds = ListenFds::take()?;
//! let listener = match fds.index_of("http") {
//!     Some(i) => fds.take_tcp_listener(i)?,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! // An inherited socket is blocking; tokio needs it non-blocking.
//! listener.set_nonblocking(true)?;
//! let listener = tokio::net::TcpListener::from_std(listener)?;
//! loop {
//!     let (connection, _) = listener.accept().await?;
//!     # drop(connection);
//! }
//! # }
//! ```

use std::io::{self, ErrorKind};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{sys, FdKind};

mod command;
// The Windows protocol's rules are pure, and tested here too; the parsers
// of the variables serve both.
#[allow(dead_code)]
mod systemfd;

pub use self::command::{find_program, room_for, Child, Command};
use self::systemfd::{malformed, number};

/// The variables of the convention, which [`Command`] never passes on
/// from this process's environment.
pub(crate) const VARIABLES: [&str; 5] = [
    "LISTEN_PID",
    "LISTEN_PIDFDID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
];

/// Where the fds start unless `LISTEN_FDS_FIRST_FD` says otherwise.
const FIRST: RawFd = 3;

/// The most fds the convention may hand over; anything larger is not a
/// count a real caller sets.
const MOST: usize = 1 << 16;

/// Whether [`ListenFds::take`] has been called in this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The fds a program was started with under the socket-activation
/// convention, owned, with their names.
///
/// Each fd is taken out once, by index: raw with [`take_fd`], or checked
/// and typed with [`take_tcp_listener`], [`take_unix_listener`],
/// [`take_udp_socket`], [`take_tcp_stream`] or [`take_unix_stream`]. A
/// program given one listener, whatever its name, takes it with
/// [`take_only_tcp_listener`] or [`take_only_unix_listener`]. The fds not
/// taken are closed when this is dropped.
///
/// [`take_fd`]: ListenFds::take_fd
/// [`take_tcp_listener`]: ListenFds::take_tcp_listener
/// [`take_unix_listener`]: ListenFds::take_unix_listener
/// [`take_udp_socket`]: ListenFds::take_udp_socket
/// [`take_tcp_stream`]: ListenFds::take_tcp_stream
/// [`take_unix_stream`]: ListenFds::take_unix_stream
/// [`take_only_tcp_listener`]: ListenFds::take_only_tcp_listener
/// [`take_only_unix_listener`]: ListenFds::take_only_unix_listener
#[derive(Debug, Default)]
pub struct ListenFds {
    /// The fds, by index; `None` once taken.
    fds: Vec<Option<OwnedFd>>,
    /// The name of each fd; empty where the starter gave no names.
    names: Vec<String>,
    /// The number of the first fd, for messages.
    first: RawFd,
}

/// What the variables say, once checked: where the fds are and what they
/// are called. Pure, so that the rules are tested apart from the process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) first: RawFd,
    pub(crate) count: usize,
    pub(crate) names: Vec<String>,
}

/// Reads the convention's variables, given by `var`, for the process `pid`
/// whose pidfd id is `pidfd_id()` where the system has one. `Ok(None)`
/// when the fds are not this process's: `LISTEN_PID` is unset or names
/// another process, or `LISTEN_PIDFDID` names another process of the same
/// pid.
pub(crate) fn layout(
    var: impl Fn(&str) -> Option<String>,
    pid: u32,
    pidfd_id: impl FnOnce() -> Option<u64>,
) -> io::Result<Option<Layout>> {
    let Some(listen_pid) = var("LISTEN_PID") else {
        return Ok(None);
    };
    if number::<u32>("LISTEN_PID", &listen_pid)? != pid {
        return Ok(None);
    }
    if let Some(id) = var("LISTEN_PIDFDID") {
        let id = number::<u64>("LISTEN_PIDFDID", &id)?;
        if pidfd_id().is_some_and(|own| own != id) {
            return Ok(None);
        }
    }
    let count = match var("LISTEN_FDS") {
        Some(count) => number::<usize>("LISTEN_FDS", &count)?,
        None => 0,
    };
    if count > MOST {
        return Err(malformed("LISTEN_FDS", &count.to_string(), "too many fds"));
    }
    let first = match var("LISTEN_FDS_FIRST_FD") {
        Some(first) => match number::<RawFd>("LISTEN_FDS_FIRST_FD", &first)? {
            fd if fd >= FIRST => fd,
            _ => return Err(malformed("LISTEN_FDS_FIRST_FD", &first, "below 3")),
        },
        None => FIRST,
    };
    // `count <= MOST`, so this cannot wrap unless `first` is near the top.
    if first.checked_add(count as RawFd).is_none() {
        return Err(malformed(
            "LISTEN_FDS_FIRST_FD",
            &first.to_string(),
            "too high for the count of fds",
        ));
    }
    let names = systemfd::names(var("LISTEN_FDNAMES").as_deref(), count)?;
    Ok(Some(Layout {
        first,
        count,
        names,
    }))
}

impl ListenFds {
    /// Takes the fds this process was started with, by the socket-activation
    /// convention; an empty set if it was started without any.
    ///
    /// When `LISTEN_PID` is unset or names another process (or
    /// `LISTEN_PIDFDID` another process of the same pid), the set is empty
    /// and nothing is changed. Otherwise the fds are marked close-on-exec,
    /// and the set owns them. The environment is never changed: the
    /// variables stay, meant for this pid alone (see the [module
    /// documentation](self)). Only the first call in a process looks, so
    /// that no fd has two owners: later calls return an empty set.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidData`] when a variable is malformed (the message
    /// names it), or `LISTEN_FDS` counts an fd that is not open; the fds
    /// are then left as they are, owned by no one. A later call returns an
    /// empty set.
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::activation::ListenFds;
    ///
    /// let fds = ListenFds::take()?;
    /// for i in 0..fds.len() {
    ///     println!("fd {i} is called {}", fds.name(i).unwrap());
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take() -> io::Result<ListenFds> {
        ListenFds::take_checked(true)
    }

    /// Takes the fds as [`take`](ListenFds::take) does, but leaves out
    /// each fd that `LISTEN_FDS` counts and that is not open, rather than
    /// refusing them all: its index keeps its name and has no fd
    /// ([`take_fd`](ListenFds::take_fd) gives `None`). For a program that
    /// must keep what it was given even when the count is wrong, such as
    /// an fd holder. Call it before this process opens any fd of its own
    /// (an event loop's, a socket, a file): a counted number that is not
    /// open now could be this process's own later, and a set taken later
    /// would own it too.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidData`] when a variable is malformed, as
    /// [`take`](ListenFds::take).
    ///
    /// # Examples
    ///
    /// ```
    /// use io_fdpass::activation::ListenFds;
    ///
    /// let mut fds = ListenFds::take_open()?;
    /// for i in 0..fds.len() {
    ///     if fds.take_fd(i).is_none() {
    ///         eprintln!("{} was counted but not passed", fds.name(i).unwrap());
    ///     }
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_open() -> io::Result<ListenFds> {
        ListenFds::take_checked(false)
    }

    /// [`take`](ListenFds::take) when `strict`, else
    /// [`take_open`](ListenFds::take_open).
    fn take_checked(strict: bool) -> io::Result<ListenFds> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(ListenFds::default());
        }
        let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let layout = layout(var, std::process::id(), sys::own_pidfd_id);
        let Some(layout) = layout? else {
            return Ok(ListenFds::default());
        };
        let fds = layout.first..layout.first + layout.count as RawFd;
        if let Some(fd) = fds.clone().find(|&fd| strict && !sys::is_open(fd)) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "LISTEN_FDS counts {} fd(s) from {}, but fd {fd} is not open",
                    layout.count, layout.first
                ),
            ));
        }
        let fds = fds
            .map(|fd| {
                if !sys::is_open(fd) {
                    return None;
                }
                // SAFETY: open, as just checked, and by the convention this
                // process's to own: the one call that adopts it is this one.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // Marking may fail only for an fd that is not open.
                let _ = sys::set_cloexec(fd.as_fd());
                Some(fd)
            })
            .collect();
        Ok(ListenFds {
            fds,
            names: layout.names,
            first: layout.first,
        })
    }

    /// How many fds the set had, taken or not.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether the set had no fds at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The name of fd `index`, from `LISTEN_FDNAMES`; `"unknown"` when the
    /// starter gave no names, as systemd says. `None` out of range.
    pub fn name(&self, index: usize) -> Option<&str> {
        if index >= self.fds.len() {
            return None;
        }
        Some(self.names.get(index).map_or("unknown", String::as_str))
    }

    /// The index of the first fd called `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.fds.len()).find(|&i| self.name(i) == Some(name))
    }

    /// Takes fd `index` out of the set, whatever it is. `None` when it is
    /// out of range or taken already, or was not open for
    /// [`take_open`](ListenFds::take_open).
    pub fn take_fd(&mut self, index: usize) -> Option<OwnedFd> {
        self.fds.get_mut(index)?.take()
    }

    /// Takes fd `index` as a TCP listener, checking that it is a listening
    /// IPv4 or IPv6 stream socket.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for an index out of range or taken already;
    /// [`ErrorKind::InvalidInput`], saying what the fd is, for any other
    /// kind of fd, which stays in the set.
    pub fn take_tcp_listener(&mut self, index: usize) -> io::Result<TcpListener> {
        self.take_as(index, Want::TcpListener)
            .map(TcpListener::from)
    }

    /// Takes fd `index` as a unix listener, checking that it is a listening
    /// unix stream socket.
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_unix_listener(&mut self, index: usize) -> io::Result<UnixListener> {
        self.take_as(index, Want::UnixListener)
            .map(UnixListener::from)
    }

    /// Takes fd `index` as a UDP socket, checking that it is an IPv4 or
    /// IPv6 datagram socket.
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_udp_socket(&mut self, index: usize) -> io::Result<UdpSocket> {
        self.take_as(index, Want::UdpSocket).map(UdpSocket::from)
    }

    /// Takes fd `index` as a connected TCP stream, checking that it is an
    /// IPv4 or IPv6 stream socket that does not listen: a connection
    /// accepted by the previous generation, say
    /// ([`restart::take_tcp_connection`](crate::restart::take_tcp_connection)
    /// takes it with the bytes it had read).
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_tcp_stream(&mut self, index: usize) -> io::Result<TcpStream> {
        self.take_as(index, Want::TcpStream).map(TcpStream::from)
    }

    /// Takes fd `index` as a connected unix stream socket, checking that it
    /// is a unix stream socket that does not listen.
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_unix_stream(&mut self, index: usize) -> io::Result<UnixStream> {
        self.take_as(index, Want::UnixStream).map(UnixStream::from)
    }

    /// Takes the one listening TCP socket of the set, whatever its name:
    /// `Ok(None)` when there is none, so that the program binds its own.
    ///
    /// For a program that listens on one address, this adopts its socket
    /// from every starter alike: `fdpass listen` (which names it by its
    /// scheme, `tcp` or `http`, unless told a name), `systemd-socket-activate`
    /// and `systemfd` (which name it `unknown`), a systemd socket unit (its
    /// `FileDescriptorName=`, or the unit's name), or a previous generation
    /// ([`restart`](crate::restart)). Fds of other kinds in the set (a
    /// connection, a state) are left where they are.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when the set holds more than one
    /// listening TCP socket (the message names them): take one by name
    /// with [`index_of`](ListenFds::index_of) and
    /// [`take_tcp_listener`](ListenFds::take_tcp_listener). The error of
    /// `getsockopt` for an fd that cannot be examined.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use io_fdpass::activation::ListenFds;
    ///
    /// let mut inherited = ListenFds::take()?;
    /// let listener = match inherited.take_only_tcp_listener()? {
    ///     Some(listener) => listener,
    ///     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
    /// };
    /// # drop(listener);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_only_tcp_listener(&mut self) -> io::Result<Option<TcpListener>> {
        let index = self.only(Want::TcpListener)?;
        index.map(|i| self.take_tcp_listener(i)).transpose()
    }

    /// Takes the one listening unix stream socket of the set, whatever its
    /// name: `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// As [`take_only_tcp_listener`](ListenFds::take_only_tcp_listener).
    pub fn take_only_unix_listener(&mut self) -> io::Result<Option<UnixListener>> {
        let index = self.only(Want::UnixListener)?;
        index.map(|i| self.take_unix_listener(i)).transpose()
    }

    /// The index of the one fd left in the set that is what `want` says.
    fn only(&self, want: Want) -> io::Result<Option<usize>> {
        let mut found = Vec::new();
        for (i, fd) in self.fds.iter().enumerate() {
            if let Some(fd) = fd {
                if want.accepts(&FdKind::of(fd)?) {
                    found.push(i);
                }
            }
        }
        match found[..] {
            [] => Ok(None),
            [i] => Ok(Some(i)),
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .map(|&i| format!("{:?} (index {i})", self.name(i).unwrap_or("unknown")))
                    .collect();
                Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} inherited fds are {}: {}; take one by its name",
                        found.len(),
                        want.plural(),
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Takes fd `index` if it is what `want` says.
    fn take_as(&mut self, index: usize, want: Want) -> io::Result<OwnedFd> {
        let name = self.name(index).unwrap_or("unknown").to_owned();
        let number = self.first + index as RawFd;
        let slot = self.fds.get_mut(index).filter(|fd| fd.is_some());
        let Some(slot) = slot else {
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "no fd {index} among the {} inherited ones (out of range, taken already, or not open)",
                    self.fds.len()
                ),
            ));
        };
        let kind = slot.as_ref().map(FdKind::of);
        let kind = kind.unwrap_or(Ok(FdKind::Other(None)))?;
        if !want.accepts(&kind) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "inherited fd {number} (index {index}, {name:?}) is {kind}, not {}",
                    want.describe()
                ),
            ));
        }
        slot.take()
            .ok_or_else(|| io::Error::from(ErrorKind::NotFound))
    }
}

/// What a typed take asks for.
#[derive(Clone, Copy)]
enum Want {
    TcpListener,
    UnixListener,
    UdpSocket,
    TcpStream,
    UnixStream,
}

impl Want {
    fn accepts(self, kind: &FdKind) -> bool {
        kind.socket().is_some_and(|socket| match self {
            Want::TcpListener => socket.is_tcp_listener(),
            Want::UnixListener => socket.is_unix_listener(),
            Want::UdpSocket => socket.is_udp(),
            Want::TcpStream => socket.is_tcp_stream(),
            Want::UnixStream => socket.is_unix_stream(),
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Want::TcpListener => "a listening TCP socket",
            Want::UnixListener => "a listening unix stream socket",
            Want::UdpSocket => "a UDP socket",
            Want::TcpStream => "a TCP stream that does not listen",
            Want::UnixStream => "a unix stream socket that does not listen",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Want::TcpListener => "listening TCP sockets",
            Want::UnixListener => "listening unix stream sockets",
            Want::UdpSocket => "UDP sockets",
            Want::TcpStream => "TCP streams",
            Want::UnixStream => "unix streams",
        }
    }
}

/// A borrowed fd's description, for messages elsewhere in the crate.
#[allow(dead_code)]
pub(crate) fn describe(fd: BorrowedFd<'_>) -> String {
    match FdKind::of(fd) {
        Ok(kind) => kind.to_string(),
        Err(e) => format!("an fd that cannot be examined ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn read(pairs: &[(&str, &str)]) -> io::Result<Option<Layout>> {
        layout(env(pairs), 42, || Some(7))
    }

    #[test]
    fn no_pid_or_another_pid_is_not_ours() {
        assert_eq!(read(&[("LISTEN_FDS", "2")]).unwrap(), None);
        assert_eq!(
            read(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "2")]).unwrap(),
            None
        );
        // Another process of the same pid, by its pidfd id.
        let other = [
            ("LISTEN_PID", "42"),
            ("LISTEN_PIDFDID", "8"),
            ("LISTEN_FDS", "1"),
        ];
        assert_eq!(read(&other).unwrap(), None);
    }

    #[test]
    fn ours_with_names_and_without() {
        let named = [
            ("LISTEN_PID", "42"),
            ("LISTEN_PIDFDID", "7"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "http:admin"),
        ];
        assert_eq!(
            read(&named).unwrap(),
            Some(Layout {
                first: 3,
                count: 2,
                names: vec!["http".into(), "admin".into()]
            })
        );
        let unnamed = [("LISTEN_PID", "42"), ("LISTEN_FDS", "1")];
        assert_eq!(read(&unnamed).unwrap().unwrap().names, Vec::<String>::new());
    }

    #[test]
    fn a_pidfd_id_is_checked_only_where_the_system_has_one() {
        let vars = env(&[
            ("LISTEN_PID", "42"),
            ("LISTEN_PIDFDID", "8"),
            ("LISTEN_FDS", "1"),
        ]);
        assert_eq!(layout(vars, 42, || None).unwrap().unwrap().count, 1);
    }

    #[test]
    fn systemfd_says_where_the_fds_start() {
        let vars = [
            ("LISTEN_PID", "42"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDS_FIRST_FD", "5"),
        ];
        assert_eq!(read(&vars).unwrap().unwrap().first, 5);
    }

    #[test]
    fn every_malformed_variable_is_invalid_data_naming_it() {
        let cases: [&[(&str, &str)]; 10] = [
            &[("LISTEN_PID", "")],
            &[("LISTEN_PID", "+42")],
            &[("LISTEN_PID", "forty-two")],
            &[("LISTEN_PID", "42"), ("LISTEN_PIDFDID", "x")],
            &[("LISTEN_PID", "42"), ("LISTEN_FDS", "-1")],
            &[("LISTEN_PID", "42"), ("LISTEN_FDS", "1000000")],
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "one"),
            ],
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", ""),
            ],
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDS_FIRST_FD", "2"),
            ],
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDS_FIRST_FD", "2147483647"),
            ],
        ];
        for vars in cases {
            let e = read(vars).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{vars:?}");
            let named = vars.last().unwrap().0;
            assert!(e.to_string().contains(named), "{vars:?}: {e}");
        }
    }

    #[test]
    fn no_fds_is_an_empty_layout() {
        let vars = [
            ("LISTEN_PID", "42"),
            ("LISTEN_FDS", "0"),
            ("LISTEN_FDNAMES", ""),
        ];
        assert_eq!(read(&vars).unwrap().unwrap().count, 0);
    }
}
