//! The public API on Unix: `IO::FDPass`'s two calls and the batch calls.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use crate::slots::{self, Slots};
use crate::wire::{self, Verdict};
use crate::{sys, Received};

/// The most fds one message may carry: Linux's `SCM_MAX_FD`.
///
/// Some systems accept fewer in one message (OpenBSD about 128); there the
/// kernel refuses a larger send and [`send_fds`] returns its error.
pub const MAX_FDS: usize = sys::MAX_FDS;

/// Sends one fd over a unix socket, as `IO::FDPass` does.
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
/// io_fdpass::send_fd(&here, &file)?;
///
/// let mut text = String::new();
/// File::from(io_fdpass::recv_fd(&there)?).read_to_string(&mut text)?;
/// assert!(text.contains("io-fdpass"));
/// # Ok(())
/// # }
/// ```
pub fn send_fd(socket: impl AsFd, fd: impl AsFd) -> io::Result<()> {
    match sys::send_fds(socket.as_fd(), &[0], &[fd.as_fd()])? {
        1 => Ok(()),
        _ => Err(io::Error::new(
            ErrorKind::WriteZero,
            "the socket accepted no data byte, so the fd was not sent",
        )),
    }
}

/// Receives one fd sent by [`send_fd`], Perl's `IO::FDPass` or Python's
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
/// io_fdpass::send_fd(&here, &reader)?;
/// drop(reader);
///
/// let mut received = File::from(io_fdpass::recv_fd(&there)?);
/// writer.write_all(b"through the passed fd")?;
/// drop(writer);
/// let mut text = String::new();
/// received.read_to_string(&mut text)?;
/// assert_eq!(text, "through the passed fd");
/// # Ok(())
/// # }
/// ```
pub fn recv_fd(socket: impl AsFd) -> io::Result<OwnedFd> {
    let socket = socket.as_fd();
    let mut byte = [0xff_u8];
    let mut first = None;
    let mut slot = Slots::new(std::slice::from_mut(&mut first));
    let got = sys::recv_fds(socket, &mut byte, |fd| slot.offer(fd))?;
    match wire::judge(&got, byte[0], first) {
        Verdict::Good(fd) => Ok(fd),
        Verdict::End => Err(end_error(socket)?),
        Verdict::Bad(e) => Err(e),
    }
}

/// Sends several fds in one message of `IO::FDPass`'s format: the byte `0`
/// with every fd attached, which [`recv_batch`] takes whole, as does
/// Python's `socket.recv_fds`. With one fd it is [`send_fd`].
///
/// # Errors
///
/// - [`ErrorKind::InvalidInput`]: no fd, or more than [`MAX_FDS`];
/// - as [`send_fd`] otherwise.
///
/// # Examples
///
/// See [`recv_batch`].
pub fn send_batch(socket: impl AsFd, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "a batch carries at least one fd",
        ));
    }
    send_fds(socket, &[0], fds).map(drop)
}

/// Receives one message of several fds in `IO::FDPass`'s format — the byte
/// `0` with one or more fds — into the empty slots of `fds`, and returns
/// how many came.
///
/// This is what `send_fds(socket, &[0], fds)` sends, Python's
/// `socket.send_fds(sock, [b"\0"], fds)`, and (with one fd) [`send_fd`] and
/// Perl's `IO::FDPass`. Each fd goes into the next empty (`None`) slot of
/// `fds`, in order; slots that hold an fd already are skipped, never
/// overwritten. The number of empty slots is the exact bound: a message
/// that brings more fds than that is an error, and none of its fds is
/// kept. Nothing is allocated. Received fds are close-on-exec, as in
/// [`recv_fd`].
///
/// To receive exactly `n` fds sent in any number of such messages, call it
/// until `n` slots are full.
///
/// # Errors
///
/// On every error the slots are as they were, and every fd the message
/// brought is closed.
/// - [`ErrorKind::InvalidInput`]: `fds` has no empty slot;
/// - [`ErrorKind::InvalidData`]: more fds than empty slots, or any break
///   of the format that [`recv_fd`] rejects;
/// - as [`recv_fd`] otherwise.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::os::fd::{AsFd, OwnedFd};
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdout = std::io::stdout();
/// io_fdpass::send_batch(&a, &[stdout.as_fd(), stdout.as_fd()])?;
///
/// let mut fds: [Option<OwnedFd>; 4] = Default::default();
/// assert_eq!(io_fdpass::recv_batch(&b, &mut fds)?, 2);
/// assert!(fds[0].is_some() && fds[1].is_some() && fds[2].is_none());
/// # Ok(())
/// # }
/// ```
pub fn recv_batch(socket: impl AsFd, fds: &mut [Option<OwnedFd>]) -> io::Result<usize> {
    let socket = socket.as_fd();
    let room = slots::room(fds).min(sys::RECV_FDS);
    if room == 0 {
        return Err(no_room());
    }
    // The message is judged whole before any fd reaches the caller.
    let mut taken = [const { None }; sys::RECV_FDS];
    let mut slots = Slots::new(&mut taken[..room]);
    let mut byte = [0xff_u8];
    let got = sys::recv_fds(socket, &mut byte, |fd| slots.offer(fd))?;
    match wire::judge_all(&got, byte[0]) {
        Verdict::Good(count) => {
            let mut slots = Slots::new(fds);
            for fd in taken.iter_mut().filter_map(Option::take) {
                drop(slots.offer(fd));
            }
            Ok(count)
        }
        Verdict::End => Err(end_error(socket)?),
        Verdict::Bad(e) => Err(e),
    }
}

/// The error of a receive given no empty slot.
pub(crate) fn no_room() -> io::Error {
    io::Error::new(
        ErrorKind::InvalidInput,
        "the fd storage has no empty slot: give it room for the fds to receive",
    )
}

/// The error for [`Verdict::End`]: a closed peer, or an empty message.
pub(crate) fn end_error(socket: BorrowedFd<'_>) -> io::Result<io::Error> {
    Ok(wire::end(sys::read_empty_message(socket)?))
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
/// Like [`send_fd`], it never raises `SIGPIPE` and retries after `EINTR`.
///
/// # Errors
///
/// - [`ErrorKind::InvalidInput`]: more than [`MAX_FDS`] fds, or fds with
///   empty `data` (on a stream socket, fds need a byte to travel with).
/// - any error of `sendmsg(2)`, as in [`send_fd`].
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
/// let sent = io_fdpass::send_fds(&a, b"pipe", &[r.as_fd(), w.as_fd()])?;
/// assert_eq!(sent, 4);
///
/// let mut data = [0; 16];
/// let mut fds = [None, None];
/// let got = io_fdpass::recv_fds(&b, &mut data, &mut fds)?;
/// assert_eq!(&data[..got.bytes], b"pipe");
/// assert_eq!(got.fds_received, 2);
/// # Ok(())
/// # }
/// ```
pub fn send_fds(socket: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    sys::send_fds(socket.as_fd(), data, fds)
}

/// Receives one message: data into `data`, fds into the empty slots of
/// `fds`.
///
/// One `recvmsg(2)`. Each fd goes into the next empty (`None`) slot of
/// `fds`, in order; slots that hold an fd already are skipped, never
/// overwritten. The number of empty slots is the exact bound: fds beyond
/// it are closed and counted in [`Received::fds_discarded`], so nothing is
/// lost silently — check [`Received::is_complete`]. Nothing is allocated.
///
/// Received fds are close-on-exec, as in [`recv_fd`]. Every other control
/// message is skipped. On a stream socket the call returns at most the bytes
/// of one send that carried fds, with those fds (see [`send_fds`]).
///
/// A return with `bytes == 0` and no fds means the peer closed a stream or
/// `SOCK_SEQPACKET` connection, or sent an empty datagram or record.
///
/// # Errors
///
/// Any error of `recvmsg(2)`: [`ErrorKind::WouldBlock`] on a non-blocking
/// socket with nothing to read, … On an error, `fds` is left as it was and
/// every fd that arrived is closed.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::os::fd::{AsFd, OwnedFd};
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdin = std::io::stdin();
/// io_fdpass::send_fds(&a, b"hello", &[stdin.as_fd(), stdin.as_fd()])?;
///
/// let mut data = [0; 64];
/// let mut fds: [Option<OwnedFd>; 8] = Default::default();
/// let got = io_fdpass::recv_fds(&b, &mut data, &mut fds)?;
/// assert_eq!(&data[..got.bytes], b"hello");
/// assert_eq!(got.fds_received, 2);
/// assert!(got.is_complete());
/// let received: Vec<OwnedFd> = fds.iter_mut().filter_map(Option::take).collect();
/// # assert_eq!(received.len(), 2);
/// # Ok(())
/// # }
/// ```
pub fn recv_fds(
    socket: impl AsFd,
    data: &mut [u8],
    fds: &mut [Option<OwnedFd>],
) -> io::Result<Received> {
    let mut slots = Slots::new(fds);
    sys::recv_fds(socket.as_fd(), data, |fd| slots.offer(fd))
}

/// `IO::FDPass`'s calls as methods of std's unix sockets.
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
    /// Sends one fd: [`send_fd`].
    ///
    /// # Errors
    ///
    /// As [`send_fd`].
    fn send_fd(&self, fd: impl AsFd) -> io::Result<()> {
        send_fd(self, fd)
    }

    /// Receives one fd: [`recv_fd`].
    ///
    /// # Errors
    ///
    /// As [`recv_fd`].
    fn recv_fd(&self) -> io::Result<OwnedFd> {
        recv_fd(self)
    }

    /// Sends data with fds attached: [`send_fds`].
    ///
    /// # Errors
    ///
    /// As [`send_fds`].
    fn send_fds(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        send_fds(self, data, fds)
    }

    /// Receives data and fds: [`recv_fds`].
    ///
    /// # Errors
    ///
    /// As [`recv_fds`].
    fn recv_fds(&self, data: &mut [u8], fds: &mut [Option<OwnedFd>]) -> io::Result<Received> {
        recv_fds(self, data, fds)
    }

    /// Sends several fds in one message: [`send_batch`].
    ///
    /// # Errors
    ///
    /// As [`send_batch`].
    fn send_batch(&self, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        send_batch(self, fds)
    }

    /// Receives one message of several fds: [`recv_batch`].
    ///
    /// # Errors
    ///
    /// As [`recv_batch`].
    fn recv_batch(&self, fds: &mut [Option<OwnedFd>]) -> io::Result<usize> {
        recv_batch(self, fds)
    }
}

impl FdPassExt for UnixStream {}
impl FdPassExt for UnixDatagram {}
