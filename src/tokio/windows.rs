//! The Windows calls for tokio's [`TcpStream`], without blocking the
//! runtime.
//!
//! Each call drives the same record rules and steps as the blocking calls,
//! but no call ever waits inside a system call: it reads and writes with
//! tokio's `try_read` and `try_write_vectored`, which never block, and
//! awaits readiness in between. A partial read is state, not an error: what
//! has come of a record is kept in the future until the rest comes, so a
//! peer that sends half a record and stops holds up only the future that
//! reads from it, never the runtime. A record is read to its end and no
//! further, and is sent in one vectored send when the socket has room.
//!
//! # Cancel safety
//!
//! - [`recv_handle`], [`recv_handles`] and [`recv_confirmed`] are cancel safe
//!   as long as no part of a record has been read: a future dropped after a
//!   poll that found nothing to read has read nothing, and the next call
//!   gets the record whole. A future dropped after part of a record came
//!   (one that arrived in pieces, or a peer that stopped midway) takes that
//!   part with it, and the connection is out of step: close it. A record
//!   arrives whole at once when its sender wrote it in one send, as these
//!   calls do, unless the connection's buffers are full.
//!   [`recv_handles`] dropped in the middle of a record's data closes
//!   the record's handles in the sender. [`recv_confirmed`] dropped while
//!   its answer waits for room in a full socket closes the handle it took,
//!   and the sender gets no answer.
//! - [`send_handle`] and [`send_handles`] are cancel safe as long as no part
//!   of the record has gone: a future dropped before that has sent
//!   nothing, and its duplicates are closed again. The socket takes a whole
//!   record at once unless it is full; a future dropped after part of a
//!   record went out leaves the connection out of step: close it.
//! - [`send_confirmed`] is cancel safe until its record is sent, as
//!   [`send_handle`]; dropped while it waits for the receiver's answer, it leaves
//!   the duplicate open for the receiver, as [`send_handle`] does, since the
//!   receiver may be taking it at that moment.
//! - [`send_socket`] and [`recv_socket`] are exchanges in three steps; one
//!   dropped midway leaves the connection in the middle of the exchange:
//!   close it.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::net::{TcpListener, TcpStream};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let a = TcpStream::connect(listener.local_addr()?).await?;
//! let (b, _) = listener.accept().await?;
//!
//! let file = std::fs::File::open("Cargo.toml")?;
//! io_fdpass::tokio::send_handle(&a, &file).await?;
//! let same_file = std::fs::File::from(io_fdpass::tokio::recv_handle(&b).await?);
//! # drop(same_file);
//! # Ok(())
//! # }
//! ```
//!
//! [`TcpStream`]: https://docs.rs/tokio/1/tokio/net/struct.TcpStream.html

use std::io::{self, ErrorKind};
use std::os::windows::io::{
    AsHandle, AsSocket, BorrowedHandle, IntoRawHandle, OwnedHandle, OwnedSocket,
};

use ::tokio::net::TcpStream;

use crate::record::{self, Fill, Incoming, Kind, Outgoing};
use crate::windows as blocking;
use crate::windows::batch::{Batch, Pending, SINK_LEN};
use crate::windows::confirmed::{confirmed_offer, settle, take_confirmed};
use crate::windows::plain::{plain_offer, take_plain};
use crate::windows::socket::{
    not_taken, open_socket, reply_info, socket_hello, Reply, INFO_LEN, REPLY_LEN,
};
use crate::Received;

/// Reads what `record` needs, never more, awaiting readiness whenever
/// nothing is there: [`crate::windows`]'s `fill`, without the waits.
async fn fill(socket: &TcpStream, record: &mut impl Fill) -> io::Result<()> {
    loop {
        let started = record.started();
        let buf = record.unfilled()?;
        if buf.is_empty() {
            return Ok(());
        }
        match socket.try_read(buf) {
            Ok(0) => return Err(record::closed(started)),
            Ok(n) => record.filled(n),
            // Only a read that found nothing says so, which clears the
            // readiness: the await below waits for more, never spins.
            Err(e) if e.kind() == ErrorKind::WouldBlock => socket
                .readable()
                .await
                .map_err(|e| blocking::cut_short(e, started))?,
            Err(e) => return Err(blocking::cut_short(e, started)),
        }
    }
}

/// Sends a record whole, awaiting room whenever the socket has none:
/// [`crate::windows`]'s `send_whole`, without the waits.
async fn send_whole<const P: usize>(
    socket: &TcpStream,
    record: &mut Outgoing<'_, P>,
) -> io::Result<()> {
    while !record.is_done() {
        match socket.try_write_vectored(record.rest()) {
            Ok(0) => {
                return Err(blocking::cut_short(
                    blocking::wrote_nothing(),
                    record.started(),
                ))
            }
            Ok(n) => record.sent(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => socket
                .writable()
                .await
                .map_err(|e| blocking::cut_short(e, record.started()))?,
            Err(e) => return Err(blocking::cut_short(e, record.started())),
        }
    }
    Ok(())
}

/// Reads the other side's answer.
async fn read_answer(socket: &TcpStream) -> io::Result<()> {
    let mut answer = Incoming::<1>::new(Kind::Answer);
    fill(socket, &mut answer).await?;
    record::parse_answer(*answer.array())
}

/// Tells the other side of an exchange how it went; the outcome is
/// returned unchanged.
async fn answer<T>(socket: &TcpStream, outcome: io::Result<T>) -> io::Result<T> {
    // If the peer has gone it has closed its copy; what was taken here is
    // this process's own either way.
    let status = record::status(outcome.is_ok());
    let _ = send_whole(socket, &mut Outgoing::new([&status])).await;
    outcome
}

/// Sends a handle the `IO::FDPass` way, waiting until the socket is writable:
/// [`crate::send_handle`].
///
/// # Errors
///
/// As [`crate::send_handle`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn send_handle(socket: &TcpStream, handle: impl AsHandle) -> io::Result<()> {
    let (dup, record) = plain_offer(handle.as_handle())?;
    // A record cut short is never acted on: the duplicate may close with it.
    send_whole(socket, &mut Outgoing::new([&record])).await?;
    blocking::give_away(dup);
    Ok(())
}

/// Receives a handle sent the `IO::FDPass` way, waiting until one comes:
/// [`crate::recv_handle`].
///
/// # Errors
///
/// As [`crate::recv_handle`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn recv_handle(socket: &TcpStream) -> io::Result<OwnedHandle> {
    let mut record = Incoming::<{ record::PLAIN_LEN }>::new(Kind::Plain);
    fill(socket, &mut record).await?;
    take_plain(socket.as_socket(), record.array())
}

/// Sends data and handles in one record: [`crate::send_handles`].
///
/// # Errors
///
/// As [`crate::send_handles`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let a = TcpStream::connect(listener.local_addr()?).await?;
/// let (b, _) = listener.accept().await?;
/// use std::os::windows::io::{AsHandle, OwnedHandle};
/// let file = std::fs::File::open("Cargo.toml")?;
/// let handles = [file.as_handle(), file.as_handle()];
/// io_fdpass::tokio::send_handles(&a, b"two", &handles).await?;
///
/// let mut data = [0; 8];
/// let mut received: [Option<OwnedHandle>; 2] = Default::default();
/// let got = io_fdpass::tokio::recv_handles(&b, &mut data, &mut received).await?;
/// assert_eq!((&data[..got.bytes], got.fds_received), (&b"two"[..], 2));
/// # Ok(())
/// # }
/// ```
pub async fn send_handles(
    socket: &TcpStream,
    data: &[u8],
    handles: &[BorrowedHandle<'_>],
) -> io::Result<usize> {
    let mut batch = Batch::new(data.len(), handles)?;
    send_whole(socket, &mut batch.outgoing(data).record).await?;
    Ok(data.len())
}

/// Receives one record of data and handles: [`crate::recv_handles`].
///
/// Unlike the blocking call, it never waits for the rest of a record in a
/// system call: what has come is kept, and the future resumes when more
/// comes.
///
/// # Errors
///
/// As [`crate::recv_handles`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_handles`].
pub async fn recv_handles(
    socket: &TcpStream,
    data: &mut [u8],
    handles: &mut [Option<OwnedHandle>],
) -> io::Result<Received> {
    let mut head = Incoming::<{ record::MAX_HEAD_LEN }>::new(Kind::BatchHead);
    fill(socket, &mut head).await?;
    let pending = Pending::new(socket.as_socket(), head.bytes())?;
    let mut sink = [0; SINK_LEN];
    let mut body = pending.data(data, &mut sink);
    fill(socket, &mut body).await?;
    pending.take(&body, handles)
}

/// Sends a handle and waits for the receiver's answer:
/// [`crate::send_confirmed`].
///
/// # Errors
///
/// As [`crate::send_confirmed`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let a = TcpStream::connect(listener.local_addr()?).await?;
/// let (b, _) = listener.accept().await?;
/// let file = std::fs::File::open("Cargo.toml")?;
/// let receiver = tokio::spawn(async move { io_fdpass::tokio::recv_confirmed(&b).await });
/// io_fdpass::tokio::send_confirmed(&a, &file).await?; // the receiver has it now
/// let same_file = std::fs::File::from(receiver.await.unwrap()?);
/// # drop(same_file);
/// # Ok(())
/// # }
/// ```
pub async fn send_confirmed(socket: &TcpStream, handle: impl AsHandle) -> io::Result<()> {
    let (dup, record) = confirmed_offer(handle.as_handle())?;
    send_whole(socket, &mut Outgoing::new([&record])).await?;
    // The receiver may be taking the duplicate from now on: a future
    // dropped while it waits must not close it.
    let mut offered = Offered(Some(dup));
    let answer = read_answer(socket).await;
    match offered.0.take() {
        Some(dup) => settle(dup, answer),
        None => answer,
    }
}

/// A duplicate on offer to a receiver; if the wait for the answer is
/// dropped, it is left open for the receiver.
struct Offered(Option<OwnedHandle>);

impl Drop for Offered {
    fn drop(&mut self) {
        if let Some(dup) = self.0.take() {
            let _ = dup.into_raw_handle();
        }
    }
}

/// Receives a handle from [`send_confirmed`] and answers:
/// [`crate::recv_confirmed`].
///
/// # Errors
///
/// As [`crate::recv_confirmed`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_confirmed`].
pub async fn recv_confirmed(socket: &TcpStream) -> io::Result<OwnedHandle> {
    let mut record = Incoming::<{ record::CONFIRMED_LEN }>::new(Kind::Confirmed);
    fill(socket, &mut record).await?;
    let outcome = take_confirmed(socket.as_socket(), record.array());
    answer(socket, outcome).await
}

/// Sends a socket with `WSADuplicateSocketW`: [`crate::send_socket`].
///
/// # Errors
///
/// As [`crate::send_socket`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let a = TcpStream::connect(listener.local_addr()?).await?;
/// let (b, _) = listener.accept().await?;
/// // A second connection, whose server side goes from `a` to `b`.
/// let client = TcpStream::connect(listener.local_addr()?).await?;
/// let (server_side, _) = listener.accept().await?;
/// let receiver = tokio::spawn(async move { io_fdpass::tokio::recv_socket(&b).await });
/// io_fdpass::tokio::send_socket(&a, &server_side).await?;
/// let passed = std::net::TcpStream::from(receiver.await.unwrap()?);
/// # drop((passed, client));
/// # Ok(())
/// # }
/// ```
pub async fn send_socket(socket: &TcpStream, passed: impl AsSocket) -> io::Result<()> {
    let mut hello = Incoming::<{ record::HELLO_LEN }>::new(Kind::Hello);
    fill(socket, &mut hello).await?;
    let reply = Reply::to(socket.as_socket(), passed.as_socket(), hello.array());
    let sent = send_whole(socket, &mut Outgoing::new(reply.parts())).await;
    // The receiver was told either way; a failed duplication comes first.
    reply.outcome()?;
    sent?;
    read_answer(socket).await.map_err(not_taken)
}

/// Receives a socket from [`send_socket`]: [`crate::recv_socket`].
///
/// # Errors
///
/// As [`crate::recv_socket`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_socket`].
pub async fn recv_socket(socket: &TcpStream) -> io::Result<OwnedSocket> {
    let hello = socket_hello();
    send_whole(socket, &mut Outgoing::new([&hello])).await?;
    let mut reply = Incoming::<REPLY_LEN>::new(Kind::Reply { info_len: INFO_LEN });
    fill(socket, &mut reply).await?;
    // A sender that could not duplicate the socket waits for no answer.
    let info = reply_info(reply.bytes())?;
    answer(socket, open_socket(info)).await
}
