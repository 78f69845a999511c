//! Windows: IO::FDPass's way of passing a HANDLE over a stream socket, and
//! safer ways beside it.
//!
//! Each call drives the record rules of [`crate::record`] with the system
//! calls of [`crate::sys`], in steps that the tokio calls drive too: a
//! record goes out in one vectored send ([`send_whole`]) and is read as
//! [`record::Fill`] says, never past its end ([`fill`]).

use std::io::{self, ErrorKind};
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, IntoRawHandle, OwnedHandle,
    OwnedSocket,
};

use crate::record::{self, BatchHeader, Data, Fill, HandleValue, Incoming, Kind, Outgoing};
use crate::slots::{self, Slots};
use crate::sys::{self, Process};
use crate::Received;

pub use crate::record::MAX_HANDLES;

/// The length of the `WSAPROTOCOL_INFOW` in [`send_socket`]'s reply, and
/// of the whole reply.
pub(crate) const INFO_LEN: usize = sys::PROTOCOL_INFO_LEN;
pub(crate) const REPLY_LEN: usize = 1 + INFO_LEN;

/// The size of the buffer a receive drops the data that does not fit
/// into, a piece at a time.
pub(crate) const SINK_LEN: usize = 512;

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

/// Sends a record whole, each try one vectored `WSASend`: `WouldBlock` if a
/// non-blocking socket has no room for its first byte; once any byte has
/// gone, the rest is sent, waiting for room if need be, so that no record
/// is left half-sent.
fn send_whole<const P: usize>(
    socket: BorrowedSocket<'_>,
    record: &mut Outgoing<'_, P>,
) -> io::Result<()> {
    while !record.is_done() {
        match sys::send_vectored(socket, record.rest()) {
            Ok(0) => return Err(cut_short(wrote_nothing(), record.started())),
            Ok(n) => record.sent(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock && record.started() => {
                sys::wait(socket, sys::WRITABLE).map_err(|e| cut_short(e, true))?;
            }
            Err(e) => return Err(cut_short(e, record.started())),
        }
    }
    Ok(())
}

/// Reads what `record` needs, never more: `WouldBlock` on a non-blocking
/// socket before the record's first byte; once any has come, the rest is
/// waited for, so that a `WouldBlock` never falls inside a record.
fn fill(socket: BorrowedSocket<'_>, record: &mut impl Fill) -> io::Result<()> {
    loop {
        let started = record.started();
        let buf = record.unfilled()?;
        if buf.is_empty() {
            return Ok(());
        }
        match sys::recv(socket, buf) {
            Ok(0) => return Err(record::closed(started)),
            Ok(n) => record.filled(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock && started => {
                sys::wait(socket, sys::READABLE).map_err(|e| cut_short(e, true))?;
            }
            Err(e) => return Err(cut_short(e, started)),
        }
    }
}

/// The error of a send that took nothing of a record.
pub(crate) fn wrote_nothing() -> io::Error {
    io::Error::new(ErrorKind::WriteZero, "the socket took none of the record")
}

/// An error of a record's I/O; once part of the record has gone through
/// (`started`), the message says that the connection is out of step.
pub(crate) fn cut_short(e: io::Error, started: bool) -> io::Error {
    if !started {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!("{e}; the record was cut short, so the connection is out of step: close it"),
    )
}

/// Runs an I/O `step` of an exchange that has begun until it no longer says
/// `WouldBlock`, waiting for `events` between tries, even on a non-blocking
/// socket.
fn waiting<T>(
    socket: BorrowedSocket<'_>,
    events: i16,
    mut step: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        match step() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => sys::wait(socket, events)?,
            result => return result,
        }
    }
}

/// Sends `handle` the IO::FDPass way: duplicates it within this process
/// (same access, not inheritable) and writes this process's id and the
/// duplicate's value to `socket`, any connected stream socket (TCP, or
/// AF_UNIX where Windows has it), in one `send`.
///
/// The receiver takes the duplicate with `DuplicateHandle` and
/// `DUPLICATE_CLOSE_SOURCE`. Until it does, the duplicate stays open in
/// this process, so **this process must stay alive until the receiver has
/// fetched it**; if the receiver never does, the duplicate stays open here
/// for good. [`send_confirmed`] has neither problem.
///
/// # Errors
///
/// [`ErrorKind::WouldBlock`] on a non-blocking socket with no room, before
/// anything was sent (the duplicate is closed again); once the first byte
/// is out the record is finished, waiting for room if need be, so no
/// half-sent record is left behind. Any error of `DuplicateHandle` or
/// `send`.
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
/// io_fdpass::send(&a, &file)?;
/// let same_file = std::fs::File::from(io_fdpass::recv(&b)?);
/// assert!(same_file.metadata()?.len() > 0);
/// # Ok(())
/// # }
/// ```
pub fn send(socket: impl AsSocket, handle: impl AsHandle) -> io::Result<()> {
    let (dup, record) = plain_offer(handle.as_handle())?;
    send_whole(socket.as_socket(), &mut Outgoing::new([&record]))?;
    give_away(dup);
    Ok(())
}

/// The duplicate [`send`] offers, and the record that offers it.
pub(crate) fn plain_offer(
    handle: BorrowedHandle<'_>,
) -> io::Result<(OwnedHandle, [u8; record::PLAIN_LEN])> {
    let dup = sys::duplicate(handle)?;
    let record = record::plain(sys::current_pid(), dup.as_raw_handle() as usize);
    Ok((dup, record))
}

/// Leaves a duplicate whose record went out open for the receiver, which
/// closes it here when it fetches it.
pub(crate) fn give_away(dup: OwnedHandle) {
    let _ = dup.into_raw_handle();
}

/// Receives a handle sent the IO::FDPass way ([`send`], or IO::FDPass
/// itself): reads the sender's id and handle value, opens the sender with
/// `PROCESS_DUP_HANDLE` and duplicates the handle into this process with
/// `DUPLICATE_CLOSE_SOURCE`. The handle is not inheritable.
///
/// The pid comes from the peer and is trusted, as IO::FDPass trusts it:
/// a peer can name another process this one may open, and the handle it
/// names there is closed. Receive this way only from peers you trust. A
/// record that names this very process is refused unless Windows confirms
/// that the peer is this process, so that no peer can have one of this
/// process's own handles closed. [`recv_confirmed`] never closes a handle
/// in the process a record names, and checks the pid wherever Windows can
/// tell the peer's.
///
/// # Errors
///
/// - [`ErrorKind::WouldBlock`] on a non-blocking socket before any byte of
///   the record came; once one has, the record is read whole, waiting for
///   the rest (see [`recv_with_handles`] for why, and the tokio calls for
///   receives that never wait);
/// - [`ErrorKind::UnexpectedEof`]: the peer closed the connection, before
///   or in the middle of the record;
/// - [`ErrorKind::PermissionDenied`]: `OpenProcess` was denied; the message
///   names the missing right;
/// - [`ErrorKind::InvalidData`]: the value is null, a pseudo-handle, or no
///   handle of the sender's.
///
/// # Examples
///
/// See [`send`].
pub fn recv(socket: impl AsSocket) -> io::Result<OwnedHandle> {
    let socket = socket.as_socket();
    let mut record = Incoming::<{ record::PLAIN_LEN }>::new(Kind::Plain);
    fill(socket, &mut record)?;
    take_plain(socket, record.array())
}

/// Takes the handle IO::FDPass's record offers, closing it in the sender.
pub(crate) fn take_plain(
    socket: BorrowedSocket<'_>,
    record: &[u8; record::PLAIN_LEN],
) -> io::Result<OwnedHandle> {
    let offer = record::parse_plain(record);
    let value = HandleValue::new(offer.value)?;
    open_sender(socket, offer.pid)?.fetch(value, true)
}

/// Opens the process a record names, to take handles from it and close
/// them there, once [`record::check_sender`] lets it: never this very
/// process on a peer's word alone (see [`sys::peer_pid`]).
fn open_sender(socket: BorrowedSocket<'_>, pid: u32) -> io::Result<Process> {
    record::check_sender(pid, sys::current_pid(), || sys::peer_pid(socket))?;
    Process::open(pid)
}

/// Sends `handle` and waits until the receiver confirms it has its own
/// copy; the receiver is [`recv_confirmed`].
///
/// Safer than [`send`]: this process closes its duplicate itself once the
/// receiver has answered, or has closed the connection or died without
/// answering, so nothing is left open here whatever the receiver does; and
/// this process may exit as soon as this returns.
///
/// The record is `FDPC`, this process's id and the duplicate's value as a
/// 64-bit number; the answer is one byte, `0` for success.
///
/// # Errors
///
/// As [`send`] up to the record being sent. Then it waits for the answer
/// even on a non-blocking socket; [`ErrorKind::UnexpectedEof`] (or a reset)
/// if the receiver went away without answering, [`ErrorKind::Other`] if it
/// answered that it could not take the handle: either way the duplicate has
/// been closed. Should the wait itself fail otherwise (a receive timeout set
/// on the socket), the receiver may yet fetch the duplicate, so it is left
/// open as [`send`] leaves it, and the error says so.
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

/// Reads the other side's answer; `WouldBlock` before it comes.
fn read_answer(socket: BorrowedSocket<'_>) -> io::Result<()> {
    let mut answer = Incoming::<1>::new(Kind::Answer);
    fill(socket, &mut answer)?;
    record::parse_answer(*answer.array())
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
/// open for the receiver, as [`send`] leaves it.
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

/// Tells the other side of an exchange how it went; the outcome is
/// returned unchanged.
fn answer<T>(socket: BorrowedSocket<'_>, outcome: io::Result<T>) -> io::Result<T> {
    // If the peer has gone it has closed its copy; what was taken here is
    // this process's own either way.
    let status = record::status(outcome.is_ok());
    let _ = waiting(socket, sys::WRITABLE, || {
        send_whole(socket, &mut Outgoing::new([&status]))
    });
    outcome
}

/// Checks that the pid a peer claims is the peer's, where Windows can tell
/// (see [`sys::peer_pid`]); where it cannot, the claim is taken as it is.
fn check_peer(socket: BorrowedSocket<'_>, claimed: u32) -> io::Result<()> {
    match sys::peer_pid(socket) {
        Some(actual) if actual != claimed => Err(invalid_data(format!(
            "the peer claims to be process {claimed}, but the socket's peer is process {actual}"
        ))),
        _ => Ok(()),
    }
}

/// Receives a handle from [`send_confirmed`] and confirms it: duplicates
/// it into this process (not inheritable) without closing the sender's
/// copy, then answers, so that the sender closes its copy itself.
///
/// The pid in the record must be the socket's peer wherever Windows can
/// tell: on AF_UNIX (`SIO_AF_UNIX_GETPEERPID`), and over TCP when both ends
/// are on this machine (its connection table, `GetExtendedTcpTable`, which
/// this call reads each time). Elsewhere the pid is trusted as in [`recv`].
///
/// # Errors
///
/// As [`recv`]; and [`ErrorKind::InvalidData`] for a record that is not of
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

/// Sends a socket so that the receiver gets a working socket of its own,
/// with `WSADuplicateSocketW`; the receiver is [`recv_socket`].
///
/// A SOCKET is not an ordinary handle: Microsoft does not support passing
/// one with `DuplicateHandle` (which is what [`send`] does; under Wine the
/// result cannot send). `WSADuplicateSocketW` needs the receiver's pid, so
/// the receiver speaks first: `FDPS` and its pid. Where Windows can tell
/// the peer's pid (as in [`recv_confirmed`]) the claim is checked, so that
/// a peer cannot have the socket duplicated into some other process. This
/// side then sends a status byte and the `WSAPROTOCOL_INFOW` record, and
/// waits for the receiver's answer.
///
/// # Errors
///
/// [`ErrorKind::WouldBlock`] on a non-blocking socket before the receiver
/// has spoken; after that the exchange waits for the receiver.
/// [`ErrorKind::InvalidData`] if the receiver's first words are not of this
/// mode or name another process; [`ErrorKind::UnexpectedEof`] if it went
/// away; any error of `WSADuplicateSocketW`.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::io::{Read, Write};
/// use std::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let a = TcpStream::connect(listener.local_addr()?)?;
/// let (b, _) = listener.accept()?;
///
/// // A second connection, whose server side is passed from `a` to `b`.
/// let mut client = TcpStream::connect(listener.local_addr()?)?;
/// let (server_side, _) = listener.accept()?;
/// let receiver = std::thread::spawn(move || io_fdpass::recv_socket(&b));
/// io_fdpass::send_socket(&a, &server_side)?;
/// drop(server_side);
///
/// let mut passed = TcpStream::from(receiver.join().unwrap()?);
/// passed.write_all(b"hi")?;
/// let mut got = [0; 2];
/// client.read_exact(&mut got)?;
/// assert_eq!(&got, b"hi");
/// # Ok(())
/// # }
/// ```
pub fn send_socket(socket: impl AsSocket, passed: impl AsSocket) -> io::Result<()> {
    let socket = socket.as_socket();
    let mut hello = Incoming::<{ record::HELLO_LEN }>::new(Kind::Hello);
    fill(socket, &mut hello)?;
    let reply = Reply::to(socket, passed.as_socket(), hello.array());
    let sent = waiting(socket, sys::WRITABLE, || {
        send_whole(socket, &mut Outgoing::new(reply.parts()))
    });
    // The receiver was told either way; a failed duplication comes first.
    reply.outcome()?;
    sent?;
    waiting(socket, sys::READABLE, || read_answer(socket)).map_err(not_taken)
}

/// [`send_socket`]'s reply to a receiver's hello: the status, and the
/// socket duplicated for the process the hello names, if its claim holds.
pub(crate) struct Reply {
    status: [u8; 1],
    info: io::Result<[u8; INFO_LEN]>,
}

impl Reply {
    pub(crate) fn to(
        socket: BorrowedSocket<'_>,
        passed: BorrowedSocket<'_>,
        hello: &[u8; record::HELLO_LEN],
    ) -> Reply {
        let info = record::parse_hello(hello)
            .and_then(|pid| check_peer(socket, pid).map(|()| pid))
            .and_then(|pid| sys::duplicate_socket(passed, pid));
        Reply {
            status: record::status(info.is_ok()),
            info,
        }
    }

    /// The reply as it is sent: the status, then the record on success.
    pub(crate) fn parts(&self) -> [&[u8]; 2] {
        match &self.info {
            Ok(info) => [&self.status, info],
            Err(_) => [&self.status, &[]],
        }
    }

    /// Whether the socket could be duplicated, and if not, why.
    pub(crate) fn outcome(self) -> io::Result<()> {
        self.info.map(drop)
    }
}

/// The error of a receiver that did not take a socket.
pub(crate) fn not_taken(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("the receiver did not take the socket: {e}"),
    )
}

/// Receives a socket from [`send_socket`]: tells the sender this process's
/// id, opens the socket it describes with `WSASocketW` (not inheritable)
/// and answers.
///
/// # Errors
///
/// [`ErrorKind::WouldBlock`] on a non-blocking socket with no room for the
/// first words; after that the exchange waits for the sender.
/// [`ErrorKind::UnexpectedEof`] if the sender went away;
/// [`ErrorKind::InvalidData`] if it could not duplicate the socket or sent
/// something else.
///
/// # Examples
///
/// See [`send_socket`].
pub fn recv_socket(socket: impl AsSocket) -> io::Result<OwnedSocket> {
    let socket = socket.as_socket();
    send_whole(socket, &mut Outgoing::new([&socket_hello()]))?;
    let mut reply = Incoming::<REPLY_LEN>::new(Kind::Reply { info_len: INFO_LEN });
    waiting(socket, sys::READABLE, || fill(socket, &mut reply))?;
    // A sender that could not duplicate the socket waits for no answer.
    let info = reply_info(reply.bytes())?;
    answer(socket, open_socket(info))
}

/// The first words of [`recv_socket`]: `FDPS` and this process's id.
pub(crate) fn socket_hello() -> [u8; record::HELLO_LEN] {
    record::hello(sys::current_pid())
}

/// The socket description in [`send_socket`]'s reply, or why there is
/// none.
pub(crate) fn reply_info(reply: &[u8]) -> io::Result<&[u8; INFO_LEN]> {
    let info = record::parse_reply(reply, INFO_LEN)?;
    info.try_into().map_err(|_| record::closed(true))
}

/// Opens this process's descriptor of the socket `info` describes.
pub(crate) fn open_socket(info: &[u8; INFO_LEN]) -> io::Result<OwnedSocket> {
    sys::socket_from_info(info)
}

/// Sends `data` with up to [`MAX_HANDLES`] handles in one record, in one
/// vectored `send`, and returns `data.len()`; the receiver is
/// [`recv_with_handles`].
///
/// Each handle is duplicated within this process as by [`send`], and the
/// receiver takes each with `DUPLICATE_CLOSE_SOURCE`, so the same caution
/// holds: this process must stay alive until the receiver has them. The
/// record is `FDPB`, this process's id, the handle count and the data
/// length (each a 32-bit number), the handle values (64-bit each), then
/// the data. Nothing is allocated.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for more than [`MAX_HANDLES`] handles or
/// more than 4 GiB of data; otherwise as [`send`].
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::net::{TcpListener, TcpStream};
/// use std::os::windows::io::{AsHandle, OwnedHandle};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let a = TcpStream::connect(listener.local_addr()?)?;
/// let (b, _) = listener.accept()?;
///
/// let file = std::fs::File::open("Cargo.toml")?;
/// io_fdpass::send_with_handles(&a, b"two", &[file.as_handle(), file.as_handle()])?;
///
/// let mut data = [0; 8];
/// let mut handles: [Option<OwnedHandle>; 4] = Default::default();
/// let got = io_fdpass::recv_with_handles(&b, &mut data, &mut handles)?;
/// assert_eq!((&data[..got.bytes], got.fds), (&b"two"[..], 2));
/// let received: Vec<OwnedHandle> = handles.iter_mut().filter_map(Option::take).collect();
/// # assert_eq!(received.len(), 2);
/// # Ok(())
/// # }
/// ```
pub fn send_with_handles(
    socket: impl AsSocket,
    data: &[u8],
    handles: &[BorrowedHandle<'_>],
) -> io::Result<usize> {
    let mut batch = Batch::new(data.len(), handles)?;
    send_whole(socket.as_socket(), &mut batch.outgoing(data).record)?;
    Ok(data.len())
}

/// The duplicates and the head of a batch record to send. Until they are
/// given away the duplicates are this process's, closed with it.
pub(crate) struct Batch {
    dups: [Option<OwnedHandle>; MAX_HANDLES],
    head: [u8; record::MAX_HEAD_LEN],
    head_len: usize,
}

impl Batch {
    /// Duplicates `handles` for a record with `data_len` bytes of data.
    pub(crate) fn new(data_len: usize, handles: &[BorrowedHandle<'_>]) -> io::Result<Batch> {
        let header = BatchHeader::new(sys::current_pid(), handles.len(), data_len)?;
        let mut dups = [const { None::<OwnedHandle> }; MAX_HANDLES];
        for (handle, dup) in handles.iter().zip(&mut dups) {
            *dup = Some(sys::duplicate(*handle)?);
        }
        let values = dups
            .iter()
            .flatten()
            .map(|dup| dup.as_raw_handle() as usize as u64);
        let mut head = [0; record::MAX_HEAD_LEN];
        let head_len = header.write(values, &mut head).len();
        Ok(Batch {
            dups,
            head,
            head_len,
        })
    }

    /// The record, with `data`, on its way out.
    pub(crate) fn outgoing<'a>(&'a mut self, data: &'a [u8]) -> BatchOut<'a> {
        BatchOut {
            record: Outgoing::new([&self.head[..self.head_len], data]),
            dups: &mut self.dups,
        }
    }
}

/// A batch record on its way out. A receiver may act on a batch record's
/// head before its data is whole (it closes the handles in the sender when
/// the data never comes), so once any byte of the record has gone, the
/// duplicates are the receiver's, whether or not the rest goes: when this
/// is dropped, they are given away.
pub(crate) struct BatchOut<'a> {
    pub(crate) record: Outgoing<'a, 2>,
    dups: &'a mut [Option<OwnedHandle>; MAX_HANDLES],
}

impl Drop for BatchOut<'_> {
    fn drop(&mut self) {
        if self.record.started() {
            self.dups
                .iter_mut()
                .filter_map(Option::take)
                .for_each(give_away);
        }
    }
}

/// Receives one record of [`send_with_handles`]: data into `data`,
/// handles into the empty slots of `handles`.
///
/// Each handle goes into the next empty (`None`) slot of `handles`, in
/// order; slots that hold a handle already are skipped, never overwritten.
/// The number of empty slots is the exact bound: handles beyond it are
/// closed in the sender without being taken and counted in
/// [`Received::fds_discarded`], and data beyond `data.len()` is read and
/// dropped ([`Received::data_truncated`]), so nothing is lost silently —
/// check [`Received::is_complete`]. Nothing is allocated. Received handles
/// are not inheritable, as in [`recv`].
///
/// A record is read whole or not at all: on a non-blocking socket the call
/// gives [`ErrorKind::WouldBlock`] before the record's first byte has come,
/// and once it has, reads the record to its end, waiting for the rest even
/// on a non-blocking socket. It could not do otherwise without losing
/// something: Windows cannot tell a call whether a socket is non-blocking,
/// and a peer that closes the connection behind half a record cannot be
/// told, without reading that half, from one that is still sending it. The
/// sender writes each record in one send, so the rest of a record on one
/// machine follows at once; a peer that stops in the middle of a record
/// holds the call up, though. The tokio calls never wait: they keep what
/// has come of a record and resume when more does.
///
/// # Errors
///
/// As [`recv`]. On an error, `handles` is left as it was. If any handle
/// value is bad, every handle of the record is closed, those already taken
/// and those still in the sender, and the error is
/// [`ErrorKind::InvalidData`]; the connection stays usable. If the record
/// is cut short, its handles are closed in the sender, and the error says
/// that the connection is out of step.
///
/// The pid in the record is the peer's word, as for [`recv`]: receive this
/// way only from peers you trust. A record that names this very process is
/// refused, as by [`recv`], unless Windows confirms the peer is this process.
///
/// # Examples
///
/// See [`send_with_handles`].
pub fn recv_with_handles(
    socket: impl AsSocket,
    data: &mut [u8],
    handles: &mut [Option<OwnedHandle>],
) -> io::Result<Received> {
    let socket = socket.as_socket();
    let mut head = Incoming::<{ record::MAX_HEAD_LEN }>::new(Kind::BatchHead);
    fill(socket, &mut head)?;
    let pending = Pending::new(socket, head.bytes())?;
    let mut sink = [0; SINK_LEN];
    let mut body = pending.data(data, &mut sink);
    fill(socket, &mut body)?;
    pending.take(&body, handles)
}

/// A batch record whose head has come: its handles wait in the sender until
/// [`take`](Pending::take)n. If the record is never finished (an error, or
/// a future dropped midway), they are closed there.
pub(crate) struct Pending<'a> {
    socket: BorrowedSocket<'a>,
    header: BatchHeader,
    head: &'a [u8],
    taken: bool,
}

impl<'a> Pending<'a> {
    /// The record whose whole head is `head`.
    pub(crate) fn new(socket: BorrowedSocket<'a>, head: &'a [u8]) -> io::Result<Pending<'a>> {
        let header = BatchHeader::parse(head)?.ok_or_else(|| record::closed(true))?;
        Ok(Pending {
            socket,
            header,
            head,
            taken: false,
        })
    }

    /// The record's data as it arrives: into `buffer` as far as it goes,
    /// the rest into `sink`.
    pub(crate) fn data<'d>(&self, buffer: &'d mut [u8], sink: &'d mut [u8]) -> Data<'d> {
        Data::new(&self.header, buffer, sink)
    }

    /// Takes the record's handles into the empty slots of `handles` once
    /// its data, `body`, is in.
    pub(crate) fn take(
        mut self,
        body: &Data<'_>,
        handles: &mut [Option<OwnedHandle>],
    ) -> io::Result<Received> {
        self.taken = true;
        let mut got = Received {
            bytes: body.kept(),
            data_truncated: body.truncated(),
            ..Received::default()
        };
        let count = self.header.count;
        if count == 0 {
            return Ok(got);
        }
        let process = open_sender(self.socket, self.header.pid)?;
        let room = slots::room(handles);
        // The record is judged whole before any handle reaches the caller.
        let mut taken = [const { None::<OwnedHandle> }; MAX_HANDLES];
        let mut failure = None;
        for value in record::batch_values(self.head).map(HandleValue::new) {
            match (value, &failure) {
                (Ok(value), None) if got.fds < room => match process.fetch(value, true) {
                    Ok(handle) => {
                        taken[got.fds] = Some(handle);
                        got.fds += 1;
                    }
                    Err(e) => failure = Some(e),
                },
                (Ok(value), None) => {
                    process.close(value);
                    got.fds_discarded += 1;
                }
                (Ok(value), Some(_)) => process.close(value),
                // Nothing of the sender's to close.
                (Err(e), None) => failure = Some(e),
                (Err(_), Some(_)) => {}
            }
        }
        if let Some(e) = failure {
            return Err(invalid_data(format!(
                "{e}; all {count} handles of the record were closed"
            )));
        }
        let mut slots = Slots::new(handles);
        for handle in taken.iter_mut().filter_map(Option::take) {
            drop(slots.offer(handle));
        }
        Ok(got)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.taken || self.header.count == 0 {
            return;
        }
        if let Ok(process) = open_sender(self.socket, self.header.pid) {
            let values = record::batch_values(self.head).map(HandleValue::new);
            values.flatten().for_each(|value| process.close(value));
        }
    }
}
