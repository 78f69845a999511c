//! `IO::FDPass`'s own mode: the sender's pid and a duplicate's value, which
//! the receiver takes with `DUPLICATE_CLOSE_SOURCE`.

use std::io;
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, OwnedHandle,
};

use super::{fill, give_away, open_sender, send_whole};
use crate::record::{self, HandleValue, Incoming, Kind, Outgoing};
use crate::sys;

/// Sends `handle` the `IO::FDPass` way: duplicates it within this process
/// (same access, not inheritable) and writes this process's id and the
/// duplicate's value to `socket`, any connected stream socket (TCP, or
/// `AF_UNIX` where Windows has it), in one `send`.
///
/// The receiver takes the duplicate with `DuplicateHandle` and
/// `DUPLICATE_CLOSE_SOURCE`. Until it does, the duplicate stays open in
/// this process, so **this process must stay alive until the receiver has
/// fetched it**; if the receiver never does, the duplicate stays open here
/// for good. [`send_confirmed`](super::send_confirmed) has neither problem.
///
/// # Errors
///
/// [`ErrorKind::WouldBlock`] on a non-blocking socket with no room, before
/// anything was sent (the duplicate is closed again); once the first byte
/// is out the record is finished, waiting for room if need be, so no
/// half-sent record is left behind. Any error of `DuplicateHandle` or
/// `send`.
///
/// [`ErrorKind::WouldBlock`]: io::ErrorKind::WouldBlock
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
/// io_fdpass::send_handle(&a, &file)?;
/// let same_file = std::fs::File::from(io_fdpass::recv_handle(&b)?);
/// assert!(same_file.metadata()?.len() > 0);
/// # Ok(())
/// # }
/// ```
pub fn send_handle(socket: impl AsSocket, handle: impl AsHandle) -> io::Result<()> {
    let (dup, record) = plain_offer(handle.as_handle())?;
    send_whole(socket.as_socket(), &mut Outgoing::new([&record]))?;
    give_away(dup);
    Ok(())
}

/// The duplicate [`send_handle`] offers, and the record that offers it.
pub(crate) fn plain_offer(
    handle: BorrowedHandle<'_>,
) -> io::Result<(OwnedHandle, [u8; record::PLAIN_LEN])> {
    let dup = sys::duplicate(handle)?;
    let record = record::plain(sys::current_pid(), dup.as_raw_handle() as usize);
    Ok((dup, record))
}

/// Receives a handle sent the `IO::FDPass` way ([`send_handle`], or `IO::FDPass`
/// itself): reads the sender's id and handle value, opens the sender with
/// `PROCESS_DUP_HANDLE` and duplicates the handle into this process with
/// `DUPLICATE_CLOSE_SOURCE`. The handle is not inheritable.
///
/// The pid comes from the peer and is trusted, as `IO::FDPass` trusts it:
/// a peer can name another process this one may open, and the handle it
/// names there is closed. Receive this way only from peers you trust. A
/// record that names this very process is refused unless Windows confirms
/// that the peer is this process, so that no peer can have one of this
/// process's own handles closed. [`recv_confirmed`](super::recv_confirmed) never closes a handle
/// in the process a record names, and checks the pid wherever Windows can
/// tell the peer's.
///
/// # Errors
///
/// - [`ErrorKind::WouldBlock`] on a non-blocking socket before any byte of
///   the record came; once one has, the record is read whole, waiting for
///   the rest (see [`recv_handles`](super::recv_handles) for why, and the tokio calls for
///   receives that never wait);
/// - [`ErrorKind::UnexpectedEof`]: the peer closed the connection, before
///   or in the middle of the record;
/// - [`ErrorKind::PermissionDenied`]: `OpenProcess` was denied; the message
///   names the missing right;
/// - [`ErrorKind::InvalidData`]: the value is null, a pseudo-handle, or no
///   handle of the sender's.
///
/// [`ErrorKind::WouldBlock`]: io::ErrorKind::WouldBlock
/// [`ErrorKind::UnexpectedEof`]: io::ErrorKind::UnexpectedEof
/// [`ErrorKind::PermissionDenied`]: io::ErrorKind::PermissionDenied
/// [`ErrorKind::InvalidData`]: io::ErrorKind::InvalidData
///
/// # Examples
///
/// See [`send_handle`].
pub fn recv_handle(socket: impl AsSocket) -> io::Result<OwnedHandle> {
    let socket = socket.as_socket();
    let mut record = Incoming::<{ record::PLAIN_LEN }>::new(Kind::Plain);
    fill(socket, &mut record)?;
    take_plain(socket, record.array())
}

/// Takes the handle `IO::FDPass`'s record offers, closing it in the sender.
pub(crate) fn take_plain(
    socket: BorrowedSocket<'_>,
    record: &[u8; record::PLAIN_LEN],
) -> io::Result<OwnedHandle> {
    let offer = record::parse_plain(record);
    let value = HandleValue::new(offer.value)?;
    open_sender(socket, offer.pid)?.fetch(value, true)
}
