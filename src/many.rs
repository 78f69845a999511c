//! Bursts: many `IO::FDPass` messages in as few system calls as the OS allows.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::slots::{self, Slots};
use crate::unix::{end_error, no_room};
use crate::wire::{self, Verdict};
use crate::{sys, Received};

/// The most messages one system call of [`send_many`] or [`recv_many`]
/// moves.
pub const MAX_BURST: usize = sys::MAX_BURST;

/// What one call of [`recv_many`] received.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReceivedMany {
    /// How many good messages arrived; the fd of each went into the next
    /// empty slot of the fd storage, in the order the messages were sent.
    pub fds_received: usize,
    /// How many messages broke `IO::FDPass`'s format (a data byte other than
    /// `0`, no fd, control data the kernel truncated, …). Every fd that
    /// came with them was closed.
    pub rejected: usize,
    /// Why the first rejected message was rejected, as [`recv_fd`] would have
    /// said it.
    ///
    /// [`recv_fd`]: crate::recv_fd
    pub first_rejection: Option<io::Error>,
    /// How many surplus fds came with good messages (beyond the one each
    /// that counts); each was closed.
    pub fds_discarded: usize,
}

/// Sends one `IO::FDPass` message per fd of `fds`, batching the messages into
/// as few system calls as the OS allows, and returns how many were sent.
///
/// Each message is exactly what [`send_fd`](crate::send_fd) sends, so any
/// `IO::FDPass` or Python receiver, or [`recv_fd`](crate::recv_fd), sees ordinary
/// one-fd messages.
///
/// On Linux each call of `sendmmsg(2)` sends up to [`MAX_BURST`] messages;
/// elsewhere it is one `sendmsg(2)` per message. Like `write`, it can send
/// fewer than all: on a non-blocking socket whose buffer fills, or when an
/// error follows a successful send (the error is reported by the next call).
/// Never raises `SIGPIPE`.
///
/// # Errors
///
/// Only when nothing was sent: [`ErrorKind::WouldBlock`] on a full
/// non-blocking socket, [`ErrorKind::BrokenPipe`] when the peer has gone,
/// any other error of the system call.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdout = std::io::stdout();
/// assert_eq!(io_fdpass::send_many(&a, &[stdout.as_fd(); 10])?, 10);
///
/// let mut fds = [const { None }; 16];
/// let got = io_fdpass::recv_many(&b, &mut fds)?;
/// assert_eq!((got.fds_received, got.rejected), (10, 0));
/// assert!(fds[..10].iter().all(Option::is_some));
/// # Ok(())
/// # }
/// ```
pub fn send_many(socket: impl AsFd, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let socket = socket.as_fd();
    let mut sent = 0;
    while sent < fds.len() {
        let chunk = &fds[sent..];
        match sys::send_burst(socket, chunk) {
            Ok(n) => {
                sent += n;
                if n < chunk.len().min(MAX_BURST) {
                    break;
                }
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Receives the `IO::FDPass` messages that are waiting, as many as `fds` has
/// empty slots for, in as few system calls as the OS allows.
///
/// On a blocking socket it waits for the first message, then takes what is
/// already there without waiting for more. On Linux, Android, FreeBSD,
/// NetBSD and OpenBSD one `recvmmsg(2)` takes up to [`MAX_BURST`] messages;
/// elsewhere it is one `recvmsg(2)` per message. The fd of each good
/// message goes into the next empty (`None`) slot of `fds`, in order;
/// slots that hold an fd already are skipped, never overwritten. The number
/// of empty slots is the exact bound on the messages taken. Received fds are
/// close-on-exec, and a call allocates nothing.
///
/// Each message is judged as [`recv_fd`](crate::recv_fd) judges it. A bad message
/// does not end the burst and loses nothing around it: if message k of n is
/// bad, the good messages before and after it are all delivered, in order,
/// its fds are closed, and it is counted in [`ReceivedMany::rejected`] with
/// the reason in [`ReceivedMany::first_rejection`]. Surplus fds of a good
/// message are closed, as by `recv_fd`; but in a burst on Linux each message
/// has room for 16 fds beside other control messages, and one that brings
/// more may be rejected as truncated.
///
/// When the peer has closed a stream after some messages, those are
/// returned; the next call returns the end of the stream as an error.
///
/// # Errors
///
/// Only when no message was consumed:
/// - [`ErrorKind::InvalidInput`]: `fds` has no empty slot;
/// - [`ErrorKind::UnexpectedEof`]: the peer closed the connection;
/// - [`ErrorKind::WouldBlock`] on a non-blocking socket with nothing to
///   read;
/// - any other error of the system call.
///
/// # Examples
///
/// See [`send_many`].
pub fn recv_many(socket: impl AsFd, fds: &mut [Option<OwnedFd>]) -> io::Result<ReceivedMany> {
    let socket = socket.as_fd();
    let room = slots::room(fds).min(MAX_BURST);
    if room == 0 {
        return Err(no_room());
    }
    let mut bytes = [0xff_u8; MAX_BURST];
    let mut got = [Received::default(); MAX_BURST];
    let mut firsts = [const { None }; MAX_BURST];
    let n = sys::recv_burst(socket, &mut bytes[..room], &mut got[..room], |i, fd| {
        Slots::new(std::slice::from_mut(&mut firsts[i])).offer(fd)
    })?;

    let mut slots = Slots::new(fds);
    let mut report = ReceivedMany::default();
    for ((got, byte), first) in got.iter().zip(bytes).zip(&mut firsts).take(n) {
        let bad = match wire::judge(got, byte, first.take()) {
            Verdict::Good(fd) => {
                // There is a slot for every message taken.
                drop(slots.offer(fd));
                report.fds_received += 1;
                report.fds_discarded += got.fds_discarded;
                continue;
            }
            Verdict::Bad(e) => e,
            Verdict::End => {
                let end = end_error(socket)?;
                if end.kind() == ErrorKind::UnexpectedEof {
                    // Nothing follows the end of a stream.
                    if report.fds_received == 0 && report.rejected == 0 {
                        return Err(end);
                    }
                    break;
                }
                end // an empty message: a bad one among others
            }
        };
        report.rejected += 1;
        report.first_rejection.get_or_insert(bad);
    }
    Ok(report)
}
