//! The public API on Unix: IO::FDPass's two calls and the batch calls.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use crate::{sys, Received};

/// The most fds one message may carry: Linux's `SCM_MAX_FD`.
///
/// Some systems accept fewer in one message (OpenBSD about 128); there the
/// kernel refuses a larger send and [`send_with_fds`] returns its error.
pub const MAX_FDS: usize = sys::MAX_FDS;

/// Sends one fd over a unix socket, as IO::FDPass does.
///
/// One `sendmsg(2)` carries the data byte `0` and an `SCM_RIGHTS` control
/// message holding `fd`: the wire format of Perl's `IO::FDPass::send` and of
/// Python's `socket.send_fds(sock, [b"\0"], [fd])`, so either can receive
/// it. The receiver gets its own fd for the same open file description; the
/// caller's `fd` stays open.
///
/// Works on connected `SOCK_STREAM`, `SOCK_SEQPACKET` and `SOCK_DGRAM` unix
/// sockets. A send never raises `SIGPIPE` and is retried after `EINTR`.
///
/// # Errors
///
/// The error of `sendmsg(2)`, among them:
/// - [`ErrorKind::WouldBlock`] on a non-blocking socket whose buffer is
///   full: nothing was sent, try again once the socket is writable;
/// - [`ErrorKind::BrokenPipe`] when the peer has closed its end;
/// - `EBADF` (Uncategorized) when `fd` is not open.
///
/// # Examples
///
/// Hand an open file to the other end of a socket pair (in real use, another
/// process):
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::fs::File;
/// use std::io::Read;
/// use std::os::unix::net::UnixStream;
///
/// let (here, there) = UnixStream::pair()?;
/// let file = File::open("Cargo.toml")?;
/// io_fdpass::send(&here, &file)?;
///
/// let mut text = String::new();
/// File::from(io_fdpass::recv(&there)?).read_to_string(&mut text)?;
/// assert!(text.contains("io-fdpass"));
/// # Ok(())
/// # }
/// ```
pub fn send(socket: impl AsFd, fd: impl AsFd) -> io::Result<()> {
    match sys::send_with_fds(socket.as_fd(), &[0], &[fd.as_fd()])? {
        1 => Ok(()),
        _ => Err(io::Error::new(
            ErrorKind::WriteZero,
            "the socket accepted no data byte, so the fd was not sent",
        )),
    }
}

/// Receives one fd sent by [`send`], Perl's IO::FDPass or Python's
/// `socket.send_fds`.
///
/// One `recvmsg(2)` of one data byte. The message is accepted only if that
/// byte is `0` and at least one fd came with it; when several came, the first
/// is returned and the others are closed. Every other control message the
/// socket may carry (`SCM_CREDENTIALS` under `SO_PASSCRED`, …) is skipped,
/// not mistaken for the fd.
///
/// The fd returned is close-on-exec: atomically (`MSG_CMSG_CLOEXEC`) on
/// Linux, Android and the BSDs; on macOS and illumos it is marked right after
/// `recvmsg` returns, so a `fork` + `exec` in another thread at that moment
/// can still inherit it.
///
/// # Errors
///
/// No fd is ever left open on an error: whatever arrived with a rejected
/// message is closed.
/// - [`ErrorKind::UnexpectedEof`]: the peer closed the connection.
/// - [`ErrorKind::InvalidData`]: the message's data byte was not `0`, it
///   carried no fd, it was a datagram of more than one byte, or it was
///   empty. (On `SOCK_SEQPACKET` an empty record reads like the end; Linux
///   tells the two apart by whether the peer has hung up, other systems
///   report [`ErrorKind::UnexpectedEof`] for both.)
/// - [`ErrorKind::QuotaExceeded`]: this process is at its open-file limit,
///   so the kernel could not deliver the fd (`MSG_CTRUNC`).
/// - [`ErrorKind::WouldBlock`] on a non-blocking socket with nothing to
///   read: nothing was consumed, try again once the socket is readable.
/// - any other error of `recvmsg(2)`.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::fs::File;
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let (here, there) = UnixStream::pair()?;
/// let (reader, mut writer) = std::io::pipe()?;
/// io_fdpass::send(&here, &reader)?;
/// drop(reader);
///
/// let mut received = File::from(io_fdpass::recv(&there)?);
/// writer.write_all(b"through the passed fd")?;
/// drop(writer);
/// let mut text = String::new();
/// received.read_to_string(&mut text)?;
/// assert_eq!(text, "through the passed fd");
/// # Ok(())
/// # }
/// ```
pub fn recv(socket: impl AsFd) -> io::Result<OwnedFd> {
    let socket = socket.as_fd();
    let mut byte = [0xff_u8];
    let mut first = None;
    let got = sys::recv_with_fds(socket, &mut byte, |fd| keep_first(&mut first, fd))?;
    match judge(&got, byte[0], first) {
        Verdict::Fd(fd) => Ok(fd),
        Verdict::End => Err(end_error(socket)?),
        Verdict::Bad(e) => Err(e),
    }
}

/// Keeps the first fd of a message in `first` and gives back the others.
pub(crate) fn keep_first(first: &mut Option<OwnedFd>, fd: OwnedFd) -> Option<OwnedFd> {
    match first {
        None => {
            *first = Some(fd);
            None
        }
        Some(_) => Some(fd),
    }
}

/// What one received message is, by IO::FDPass's format.
pub(crate) enum Verdict {
    /// A good message: its first fd.
    Fd(OwnedFd),
    /// Nothing at all: the end of the connection, or an empty message.
    End,
    /// A message that breaks the format; its fds are closed by now.
    Bad(io::Error),
}

/// Judges a message of which `byte` is the data byte (if `got.bytes` is 1)
/// and `first` the first fd; any other fd has been closed already.
pub(crate) fn judge(got: &Received, byte: u8, first: Option<OwnedFd>) -> Verdict {
    let arrived = got.fds + got.fds_discarded;
    if got.control_truncated {
        return Verdict::Bad(truncated(arrived));
    }
    if got.bytes == 0 {
        return match first {
            None => Verdict::End,
            Some(_) => Verdict::Bad(invalid_data(
                "the message carried fds but no data byte; all were closed",
            )),
        };
    }
    if got.data_truncated {
        return Verdict::Bad(invalid_data(
            "the datagram was longer than the one byte IO::FDPass sends; its fds were closed",
        ));
    }
    if byte != 0 {
        return Verdict::Bad(invalid_data(format!(
            "the data byte was {byte:#04x}, not the 0 IO::FDPass sends; {arrived} fd(s) that \
             came with it were closed"
        )));
    }
    match first {
        Some(fd) => Verdict::Fd(fd),
        None => Verdict::Bad(invalid_data("the message carried no fd")),
    }
}

/// The error for [`Verdict::End`]: a closed peer, or an empty message.
pub(crate) fn end_error(socket: BorrowedFd<'_>) -> io::Result<io::Error> {
    Ok(if sys::read_empty_message(socket)? {
        invalid_data("received an empty message instead of an fd")
    } else {
        io::Error::new(
            ErrorKind::UnexpectedEof,
            "the peer closed the connection before sending an fd",
        )
    })
}

/// Sends `data` with up to [`MAX_FDS`] fds attached, in one `sendmsg(2)`,
/// and returns how many bytes were sent.
///
/// The receiver gets the fds with the first byte of this send:
/// - On a `SOCK_STREAM` socket the fds are bound to that byte position, not
///   to the `data` as a message: a receive that reads that byte gets the fds
///   whether or not it reads the rest, and a receive never returns the fds
///   of two sends at once (it stops short at the next send that carries
///   fds). The kernel may take only part of `data` — it returns fewer bytes
///   than `data.len()`, the fds went with the part that was sent, and the
///   rest is the caller's to send (without the fds).
/// - On `SOCK_SEQPACKET` and `SOCK_DGRAM` sockets `data` and `fds` travel
///   as one record, all or nothing.
///
/// Like [`send`], it never raises `SIGPIPE` and retries after `EINTR`.
///
/// # Errors
///
/// - [`ErrorKind::InvalidInput`]: more than [`MAX_FDS`] fds, or fds with
///   empty `data` (on a stream socket, fds need a byte to travel with).
/// - any error of `sendmsg(2)`, as in [`send`].
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixDatagram;
///
/// let (a, b) = UnixDatagram::pair()?;
/// let (r, w) = std::io::pipe()?;
/// let sent = io_fdpass::send_with_fds(&a, b"pipe", &[r.as_fd(), w.as_fd()])?;
/// assert_eq!(sent, 4);
///
/// let mut data = [0; 16];
/// let mut fds = Vec::with_capacity(2);
/// let got = io_fdpass::recv_with_fds(&b, &mut data, &mut fds)?;
/// assert_eq!(&data[..got.bytes], b"pipe");
/// assert_eq!(fds.len(), 2);
/// # Ok(())
/// # }
/// ```
pub fn send_with_fds(socket: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    sys::send_with_fds(socket.as_fd(), data, fds)
}

/// Receives one message: data into `data`, fds appended to `fds`.
///
/// One `recvmsg(2)`. `fds` is filled only up to its spare capacity
/// (`fds.capacity() - fds.len()`) and never grows, so a call allocates
/// nothing: reserve room once and reuse the vector. Fds beyond that room are
/// closed and counted in [`Received::fds_discarded`]; nothing is lost
/// silently — check [`Received::is_complete`].
///
/// Received fds are close-on-exec, as in [`recv`]. Every other control
/// message is skipped. On a stream socket the call returns at most the bytes
/// of one send that carried fds, with those fds (see [`send_with_fds`]).
///
/// A return with `bytes == 0` and no fds means the peer closed a stream or
/// `SOCK_SEQPACKET` connection, or sent an empty datagram or record.
///
/// # Errors
///
/// Any error of `recvmsg(2)`: [`ErrorKind::WouldBlock`] on a non-blocking
/// socket with nothing to read, … On an error, `fds` is left as it was.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdin = std::io::stdin();
/// io_fdpass::send_with_fds(&a, b"hello", &[stdin.as_fd(), stdin.as_fd()])?;
///
/// let mut data = [0; 64];
/// let mut fds = Vec::with_capacity(io_fdpass::MAX_FDS);
/// let got = io_fdpass::recv_with_fds(&b, &mut data, &mut fds)?;
/// assert_eq!(&data[..got.bytes], b"hello");
/// assert_eq!(fds.len(), 2);
/// assert!(got.is_complete());
/// # Ok(())
/// # }
/// ```
pub fn recv_with_fds(
    socket: impl AsFd,
    data: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    let before = fds.len();
    let result = sys::recv_with_fds(socket.as_fd(), data, |fd| {
        if fds.len() < fds.capacity() {
            fds.push(fd);
            None
        } else {
            Some(fd)
        }
    });
    if result.is_err() {
        fds.truncate(before);
    }
    result
}

/// IO::FDPass's calls as methods of std's unix sockets.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use io_fdpass::FdPassExt;
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// a.send_fd(&std::io::stdout())?;
/// let stdout_again = b.recv_fd()?;
/// # drop(stdout_again);
/// # Ok(())
/// # }
/// ```
pub trait FdPassExt: AsFd {
    /// Sends one fd: [`send`].
    ///
    /// # Errors
    ///
    /// As [`send`].
    fn send_fd(&self, fd: impl AsFd) -> io::Result<()> {
        send(self, fd)
    }

    /// Receives one fd: [`recv`].
    ///
    /// # Errors
    ///
    /// As [`recv`].
    fn recv_fd(&self) -> io::Result<OwnedFd> {
        recv(self)
    }

    /// Sends data with fds attached: [`send_with_fds`].
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`].
    fn send_with_fds(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        send_with_fds(self, data, fds)
    }

    /// Receives data and fds: [`recv_with_fds`].
    ///
    /// # Errors
    ///
    /// As [`recv_with_fds`].
    fn recv_with_fds(&self, data: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Received> {
        recv_with_fds(self, data, fds)
    }
}

impl FdPassExt for UnixStream {}
impl FdPassExt for UnixDatagram {}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

/// The error for a message whose control data the kernel truncated.
fn truncated(arrived: usize) -> io::Error {
    io::Error::new(
        ErrorKind::QuotaExceeded,
        format!(
            "the kernel could not deliver every fd of the message (MSG_CTRUNC): this process \
             is probably at its open-file limit (RLIMIT_NOFILE); {arrived} fd(s) that did \
             arrive were closed"
        ),
    )
}
