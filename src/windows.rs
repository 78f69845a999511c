//! Windows: IO::FDPass's way of passing a HANDLE over a stream socket, and
//! safer ways beside it.

use std::io::{self, ErrorKind};
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, IntoRawHandle, OwnedHandle,
    OwnedSocket,
};

use crate::record::{self, BatchHeader, HandleValue};
use crate::sys::{self, Process};
use crate::Received;

pub use crate::record::MAX_HANDLES;

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

/// Sends `handle` the IO::FDPass way: duplicates it within this process
/// (same access, not inheritable) and writes this process's id and the
/// duplicate's value to `socket`, any connected stream socket (TCP, or
/// AF_UNIX where Windows has it).
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
    let dup = sys::duplicate(handle.as_handle())?;
    let record = record::plain(sys::current_pid(), dup.as_raw_handle() as usize);
    sys::send_all(socket.as_socket(), &record)?;
    // From here the receiver owns the duplicate: it closes it here when it
    // fetches it.
    let _ = dup.into_raw_handle();
    Ok(())
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
///   the record came (once one has, the rest is waited for);
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
    let mut record = [0u8; record::PLAIN_LEN];
    sys::recv_exact(socket.as_socket(), &mut record)?;
    let offer = record::parse_plain(&record);
    let value = HandleValue::new(offer.value)?;
    open_sender(socket.as_socket(), offer.pid)?.fetch(value, true)
}

/// Opens the process a record names, to take handles from it and close
/// them there. A record may name this very process only if Windows confirms
/// that the peer is this process (see [`sys::peer_pid`]): on a peer's word
/// alone, `DUPLICATE_CLOSE_SOURCE` would close whichever handle of this
/// process the record names.
fn open_sender(socket: BorrowedSocket<'_>, pid: u32) -> io::Result<Process> {
    if pid == sys::current_pid() && sys::peer_pid(socket) != Some(pid) {
        return Err(invalid_data(format!(
            "the record names this process ({pid}) as its sender, but Windows does not confirm \
             that the peer is this process; no handle of this process was touched"
        )));
    }
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
    let (dup, record) = confirmed_record(handle.as_handle())?;
    sys::send_all(socket, &record)?;
    settle(dup, waiting(socket, sys::READABLE, || read_answer(socket)))
}

/// The duplicate [`send_confirmed`] offers, and the record that offers it.
pub(crate) fn confirmed_record(
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
        let _ = dup.into_raw_handle();
        "the duplicate was left open for the receiver, which may still fetch it"
    };
    Err(io::Error::new(
        e.kind(),
        format!("the receiver did not confirm the handle ({e}); {fate}"),
    ))
}

/// Reads the one-byte answer of the other side of an exchange: `0` for
/// success. `WouldBlock` before it has come, as every step here.
pub(crate) fn read_answer(socket: BorrowedSocket<'_>) -> io::Result<()> {
    let mut answer = [0xff];
    sys::recv_exact(socket, &mut answer)?;
    record::parse_answer(answer)
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

/// Tells the other side of an exchange how it went; the outcome is
/// returned unchanged.
fn answer<T>(socket: BorrowedSocket<'_>, outcome: io::Result<T>) -> io::Result<T> {
    // If the peer has gone it has closed its copy; what was taken here is
    // this process's own either way.
    let status = record::status(outcome.is_ok());
    let _ = waiting(socket, sys::WRITABLE, || sys::send_all(socket, &status));
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
    let mut record = [0u8; record::CONFIRMED_LEN];
    sys::recv_exact(socket, &mut record)?;
    answer(socket, take_confirmed(socket, &record))
}

/// Takes a copy of the handle a confirmed record offers, once the pid it
/// claims checks out.
fn take_confirmed(
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
    let claim = read_socket_hello(socket)?;
    reply_socket(socket, passed.as_socket(), claim)?;
    waiting(socket, sys::READABLE, || read_answer(socket)).map_err(not_taken)
}

/// The first step of [`send_socket`]: the receiver's hello, and the pid
/// it claims if that checks out. The outer error is the connection's, the
/// inner one the hello's.
pub(crate) fn read_socket_hello(socket: BorrowedSocket<'_>) -> io::Result<io::Result<u32>> {
    let mut hello = [0u8; record::HELLO_LEN];
    sys::recv_exact(socket, &mut hello)?;
    Ok(record::parse_hello(&hello).and_then(|pid| check_peer(socket, pid).map(|()| pid)))
}

/// The second step of [`send_socket`]: duplicates `passed` for the process
/// the receiver claimed to be, if the claim holds, and sends the status
/// byte and the record.
pub(crate) fn reply_socket(
    socket: BorrowedSocket<'_>,
    passed: BorrowedSocket<'_>,
    claim: io::Result<u32>,
) -> io::Result<()> {
    match claim.and_then(|pid| sys::duplicate_socket(passed, pid)) {
        Ok(info) => {
            let mut reply = [0u8; 1 + sys::PROTOCOL_INFO_LEN];
            reply[..1].copy_from_slice(&record::status(true));
            reply[1..].copy_from_slice(&info);
            waiting(socket, sys::WRITABLE, || sys::send_all(socket, &reply))
        }
        Err(e) => {
            let status = record::status(false);
            let _ = waiting(socket, sys::WRITABLE, || sys::send_all(socket, &status));
            Err(e)
        }
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
    sys::send_all(socket, &socket_hello())?;
    waiting(socket, sys::READABLE, || read_socket_reply(socket))
}

/// The first words of [`recv_socket`]: `FDPS` and this process's id.
pub(crate) fn socket_hello() -> [u8; record::HELLO_LEN] {
    record::hello(sys::current_pid())
}

/// The second step of [`recv_socket`]: the sender's status and record
/// (`WouldBlock` before they come), the socket opened, and the answer.
pub(crate) fn read_socket_reply(socket: BorrowedSocket<'_>) -> io::Result<OwnedSocket> {
    let mut reply = [0u8; 1 + sys::PROTOCOL_INFO_LEN];
    sys::recv_exact(socket, &mut reply[..1])?;
    let len = if reply[0] == 0 { reply.len() } else { 1 };
    // Sent with the status: here at once, or in a moment.
    waiting(socket, sys::READABLE, || {
        sys::recv_exact(socket, &mut reply[1..len])
    })?;
    let info = record::parse_reply(&reply[..len], sys::PROTOCOL_INFO_LEN)?;
    let info = info.try_into().map_err(|_| invalid_data("a short reply"))?;
    answer(socket, sys::socket_from_info(info))
}

/// Sends `data` with up to [`MAX_HANDLES`] handles in one record, and
/// returns `data.len()`; the receiver is [`recv_with_handles`].
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
/// use std::os::windows::io::AsHandle;
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let a = TcpStream::connect(listener.local_addr()?)?;
/// let (b, _) = listener.accept()?;
///
/// let file = std::fs::File::open("Cargo.toml")?;
/// io_fdpass::send_with_handles(&a, b"two", &[file.as_handle(), file.as_handle()])?;
///
/// let mut data = [0; 8];
/// let mut handles = Vec::with_capacity(4);
/// let got = io_fdpass::recv_with_handles(&b, &mut data, &mut handles)?;
/// assert_eq!((&data[..got.bytes], handles.len()), (&b"two"[..], 2));
/// # Ok(())
/// # }
/// ```
pub fn send_with_handles(
    socket: impl AsSocket,
    data: &[u8],
    handles: &[BorrowedHandle<'_>],
) -> io::Result<usize> {
    let socket = socket.as_socket();
    let header = BatchHeader::new(sys::current_pid(), handles.len(), data.len())?;
    let mut dups = [const { None::<OwnedHandle> }; MAX_HANDLES];
    for (handle, dup) in handles.iter().zip(&mut dups) {
        *dup = Some(sys::duplicate(*handle)?);
    }
    let values = dups
        .iter()
        .flatten()
        .map(|dup| dup.as_raw_handle() as usize as u64);
    let mut head = [0u8; record::MAX_HEAD_LEN];
    sys::send_all(socket, header.write(values, &mut head))?;
    // The record is under way: the duplicates are the receiver's now.
    for dup in dups.iter_mut().filter_map(Option::take) {
        let _ = dup.into_raw_handle();
    }
    sys::send_all(socket, data)?;
    Ok(data.len())
}

/// Receives one record of [`send_with_handles`]: its data into `data` and
/// its handles appended to `handles`, up to its spare capacity, so that a
/// call allocates nothing.
///
/// What does not fit is reported, never lost silently: data beyond
/// `data.len()` is read and dropped ([`Received::data_truncated`]),
/// handles beyond the spare capacity are closed in the sender without being
/// taken ([`Received::fds_discarded`]).
///
/// # Errors
///
/// As [`recv`]. If any handle value is bad, every handle of the record is
/// closed, those already taken and those still in the sender, and the
/// error is [`ErrorKind::InvalidData`]; the connection stays usable.
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
    handles: &mut Vec<OwnedHandle>,
) -> io::Result<Received> {
    let socket = socket.as_socket();
    let mut head = [0u8; record::MAX_HEAD_LEN];
    sys::recv_exact(socket, &mut head[..record::HEADER_LEN])?;
    let header = BatchHeader::parse(&head[..record::HEADER_LEN])?
        .ok_or_else(|| invalid_data("a short header"))?;
    let (pid, count, data_len) = (header.pid, header.count, header.data_len);
    let head = &mut head[..header.head_len()];
    sys::recv_exact(socket, &mut head[record::HEADER_LEN..])?;
    let values = record::batch_values(head).map(HandleValue::new);
    let mut received = Received::default();
    let kept = data_len.min(data.len());
    received.bytes = kept;
    received.data_truncated = data_len > kept;
    if let Err(e) = recv_data(socket, &mut data[..kept], data_len - kept) {
        // The record will never be whole: its handles are closed in the
        // sender, where they wait.
        if let Ok(process) = open_sender(socket, pid) {
            values.flatten().for_each(|value| process.close(value));
        }
        return Err(e);
    }
    if count == 0 {
        return Ok(received);
    }

    let process = open_sender(socket, pid)?;
    let before = handles.len();
    let mut failure = None;
    for value in values {
        let value = match value {
            Ok(value) => value,
            // Nothing of the sender's to close.
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        if failure.is_some() || handles.len() == handles.capacity() {
            process.close(value);
            received.fds_discarded += 1;
            continue;
        }
        match process.fetch(value, true) {
            Ok(handle) => handles.push(handle),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        handles.truncate(before);
        return Err(invalid_data(format!(
            "{e}; all {count} handles of the record were closed"
        )));
    }
    received.fds = handles.len() - before;
    Ok(received)
}

/// Reads a record's data into `kept` and drops the `dropped` bytes after it.
fn recv_data(socket: BorrowedSocket<'_>, kept: &mut [u8], mut dropped: usize) -> io::Result<()> {
    sys::recv_exact(socket, kept)?;
    let mut sink = [0u8; 512];
    while dropped > 0 {
        let n = dropped.min(sink.len());
        sys::recv_exact(socket, &mut sink[..n])?;
        dropped -= n;
    }
    Ok(())
}
