//! The confirmed mode: the receiver takes a copy of the handle and answers,
//! and the sender closes its duplicate itself.

use std::io::{self, ErrorKind};
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, OwnedHandle,
};

use super::{answer, check_peer, fill, give_away, read_answer, send_whole, waiting};
use crate::record::{self, HandleValue, Incoming, Kind, Outgoing};
use crate::sys::{self, Process};

/// Sends `handle` and waits until the receiver confirms it has its own
/// copy; the receiver is [`recv_confirmed`].
///
/// Safer than [`send_handle`](super::send_handle): this process closes its duplicate itself once the
/// receiver has answered, or has closed the connection or died without
/// answering, so nothing is left open here whatever the receiver does; and
/// this process may exit as soon as this returns.
///
/// The record is `FDPC`, this process's id and the duplicate's value as a
/// 64-bit number; the answer is one byte, `0` for success.
///
/// # Errors
///
/// As [`send_handle`](super::send_handle) up to the record being sent. Then it waits for the answer
/// even on a non-blocking socket; [`ErrorKind::UnexpectedEof`] (or a reset)
/// if the receiver went away without answering, [`ErrorKind::Other`] if it
/// answered that it could not take the handle: either way the duplicate has
/// been closed. Should the wait itself fail otherwise (a receive timeout set
/// on the socket), the receiver may yet fetch the duplicate, so it is left
/// open as [`send_handle`](super::send_handle) leaves it, and the error says so.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let a = TcpStream::connect(listener.local_addr()?)?;
/// let (b, _) = listener.accept()?;
///
/// let file = std::fs::File::open("Cargo.toml")?;
/// let receiver = std::thread::spawn(move || io_fdpass::recv_confirmed(&b));
/// io_fdpass::send_confirmed(&a, &file)?; // returns once the receiver has it
/// let same_file = std::fs::File::from(receiver.join().unwrap()?);
/// # drop(same_file);
/// # Ok(())
/// # }
/// ```
pub fn send_confirmed(socket: impl AsSocket, handle: impl AsHandle) -> io::Result<()> {
    let socket = socket.as_socket();
    let (dup, record) = confirmed_offer(handle.as_handle())?;
    // A record cut short is never acted on, so the duplicate may close with
    // it; once whole, the receiver may be taking it.
    send_whole(socket, &mut Outgoing::new([&record]))?;
    settle(dup, waiting(socket, sys::READABLE, || read_answer(socket)))
}

/// The duplicate [`send_confirmed`] offers, and the record that offers it.
pub(crate) fn confirmed_offer(
    handle: BorrowedHandle<'_>,
) -> io::Result<(OwnedHandle, [u8; record::CONFIRMED_LEN])> {
    let dup = sys::duplicate(handle)?;
    let record = record::confirmed(sys::current_pid(), dup.as_raw_handle() as usize as u64);
    Ok((dup, record))
}

/// Ends a confirmed send once the receiver's `answer` is in. The duplicate
/// is closed when the receiver has its own copy, said it could not take
/// one, or has gone (the connection ended). On any other failure, such as
/// a timeout, the receiver may still fetch it, and closing it then could
/// hand the receiver whatever handle later gets the same value: it is left
/// open for the receiver, as [`send_handle`](super::send_handle) leaves it.
pub(crate) fn settle(dup: OwnedHandle, answer: io::Result<()>) -> io::Result<()> {
    let Err(e) = answer else {
        return Ok(());
    };
    let receiver_is_done = matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::Other
    );
    let fate = if receiver_is_done {
        drop(dup);
        "the sender's duplicate was closed"
    } else {
        give_away(dup);
        "the duplicate was left open for the receiver, which may still fetch it"
    };
    Err(io::Error::new(
        e.kind(),
        format!("the receiver did not confirm the handle ({e}); {fate}"),
    ))
}

/// Receives a handle from [`send_confirmed`] and confirms it: duplicates
/// it into this process (not inheritable) without closing the sender's
/// copy, then answers, so that the sender closes its copy itself.
///
/// The pid in the record must be the socket's peer wherever Windows can
/// tell: on `AF_UNIX` (`SIO_AF_UNIX_GETPEERPID`), and over TCP when both ends
/// are on this machine (its connection table, `GetExtendedTcpTable`, which
/// this call reads each time). Elsewhere the pid is trusted as in [`recv_handle`](super::recv_handle).
///
/// # Errors
///
/// As [`recv_handle`](super::recv_handle); and [`ErrorKind::InvalidData`] for a record that is not of
/// this mode or whose pid is not the peer's. The sender is told of every
/// failure after the record was read.
///
/// # Examples
///
/// See [`send_confirmed`].
pub fn recv_confirmed(socket: impl AsSocket) -> io::Result<OwnedHandle> {
    let socket = socket.as_socket();
    let mut record = Incoming::<{ record::CONFIRMED_LEN }>::new(Kind::Confirmed);
    fill(socket, &mut record)?;
    answer(socket, take_confirmed(socket, record.array()))
}

/// Takes a copy of the handle a confirmed record offers, once the pid it
/// claims checks out; the sender's copy stays for the sender to close.
pub(crate) fn take_confirmed(
    socket: BorrowedSocket<'_>,
    record: &[u8; record::CONFIRMED_LEN],
) -> io::Result<OwnedHandle> {
    let offer = record::parse_confirmed(record)?;
    check_peer(socket, offer.pid)?;
    let value = HandleValue::new(offer.value)?;
    Process::open(offer.pid)?.fetch(value, false)
}
