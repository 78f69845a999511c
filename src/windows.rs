//! Windows: IO::FDPass's way of passing a HANDLE over a stream socket, and
//! safer ways beside it.

use std::io::{self, ErrorKind};
use std::mem::size_of;
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, IntoRawHandle, OwnedHandle,
    OwnedSocket,
};

use crate::sys::{self, Process};
use crate::Received;

/// The most handles one [`send_with_handles`] may carry (the same as one
/// Linux message may carry fds).
pub const MAX_HANDLES: usize = 253;

/// IO::FDPass's record: the sender's pid, then a handle value of its own,
/// pointer-sized, both in native byte order.
const RECORD: usize = 4 + size_of::<usize>();

/// The first four bytes of the records of the other modes. As a number,
/// each is 2 more than a multiple of 4, which no Windows process id is, so
/// an IO::FDPass receiver that reads one as a pid opens no process.
const CONFIRMED_MAGIC: [u8; 4] = *b"FDPC";
const SOCKET_MAGIC: [u8; 4] = *b"FDPS";
const BATCH_MAGIC: [u8; 4] = *b"FDPB";

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// Checks the magic that starts a record of one of the safer modes.
fn expect_magic(record: &[u8], magic: [u8; 4], mode: &str) -> io::Result<()> {
    if record[..4] == magic {
        Ok(())
    } else {
        Err(invalid_data(format!(
            "the peer did not send a {mode} record (is it using the matching call?)"
        )))
    }
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
    let mut record = [0u8; RECORD];
    record[..4].copy_from_slice(&sys::current_pid().to_ne_bytes());
    record[4..].copy_from_slice(&(dup.as_raw_handle() as usize).to_ne_bytes());
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
    let mut record = [0u8; RECORD];
    sys::recv_exact(socket.as_socket(), &mut record)?;
    let pid = u32_at(&record, 0);
    let value = usize::from_ne_bytes(record[4..].try_into().unwrap_or_default()) as isize as u64;
    open_sender(socket.as_socket(), pid)?.fetch(value, true)
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
pub(crate) fn confirmed_record(handle: BorrowedHandle<'_>) -> io::Result<(OwnedHandle, [u8; 16])> {
    let dup = sys::duplicate(handle)?;
    let mut record = [0u8; 16];
    record[..4].copy_from_slice(&CONFIRMED_MAGIC);
    record[4..8].copy_from_slice(&sys::current_pid().to_ne_bytes());
    record[8..].copy_from_slice(&(dup.as_raw_handle() as usize as u64).to_ne_bytes());
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
    match answer[0] {
        0 => Ok(()),
        _ => Err(io::Error::other("the peer could not take it")),
    }
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
    let byte = [u8::from(outcome.is_err())];
    let _ = waiting(socket, sys::WRITABLE, || sys::send_all(socket, &byte));
    outcome
}

/// Reads the first record of a safer mode into `record`: its magic, then
/// the pid the peer claims to be, which is returned with the verdict on
/// both. The outer error is the connection's, the inner one the record's.
fn read_claim(
    socket: BorrowedSocket<'_>,
    record: &mut [u8],
    magic: [u8; 4],
    mode: &str,
) -> io::Result<(u32, io::Result<()>)> {
    sys::recv_exact(socket, record)?;
    let pid = u32_at(record, 4);
    let verdict = expect_magic(record, magic, mode).and_then(|()| check_peer(socket, pid));
    Ok((pid, verdict))
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
    let mut record = [0u8; 16];
    let (pid, claim) = read_claim(socket, &mut record, CONFIRMED_MAGIC, "send_confirmed")?;
    let outcome = claim.and_then(|()| Process::open(pid)?.fetch(u64_at(&record, 8), false));
    answer(socket, outcome)
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
    let (pid, claim) = read_socket_hello(socket)?;
    reply_socket(socket, passed.as_socket(), pid, claim)?;
    waiting(socket, sys::READABLE, || read_answer(socket)).map_err(not_taken)
}

/// The first step of [`send_socket`]: the receiver's hello, with the pid
/// it claims and the verdict on it.
pub(crate) fn read_socket_hello(socket: BorrowedSocket<'_>) -> io::Result<(u32, io::Result<()>)> {
    read_claim(socket, &mut [0u8; 8], SOCKET_MAGIC, "recv_socket")
}

/// The second step of [`send_socket`]: duplicates `passed` for process
/// `pid` if the claim holds, and sends the status byte and the record.
pub(crate) fn reply_socket(
    socket: BorrowedSocket<'_>,
    passed: BorrowedSocket<'_>,
    pid: u32,
    claim: io::Result<()>,
) -> io::Result<()> {
    match claim.and_then(|()| sys::duplicate_socket(passed, pid)) {
        Ok(info) => {
            let mut reply = [0u8; 1 + sys::PROTOCOL_INFO_LEN];
            reply[1..].copy_from_slice(&info);
            waiting(socket, sys::WRITABLE, || sys::send_all(socket, &reply))
        }
        Err(e) => {
            let _ = waiting(socket, sys::WRITABLE, || sys::send_all(socket, &[1]));
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
pub(crate) fn socket_hello() -> [u8; 8] {
    let mut hello = [0u8; 8];
    hello[..4].copy_from_slice(&SOCKET_MAGIC);
    hello[4..].copy_from_slice(&sys::current_pid().to_ne_bytes());
    hello
}

/// The second step of [`recv_socket`]: the sender's status and record
/// (`WouldBlock` before they come), the socket opened, and the answer.
pub(crate) fn read_socket_reply(socket: BorrowedSocket<'_>) -> io::Result<OwnedSocket> {
    let mut status = [0xff];
    sys::recv_exact(socket, &mut status)?;
    if status[0] != 0 {
        return Err(invalid_data(
            "the sender could not duplicate the socket for this process",
        ));
    }
    // Sent with the status: here at once, or in a moment.
    let mut info = [0u8; sys::PROTOCOL_INFO_LEN];
    waiting(socket, sys::READABLE, || sys::recv_exact(socket, &mut info))?;
    answer(socket, sys::socket_from_info(&info))
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
    let data_len = u32::try_from(data.len()).map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidInput,
            "at most 4 GiB of data go in one record",
        )
    })?;
    if handles.len() > MAX_HANDLES {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "at most {MAX_HANDLES} handles go in one record, not {}",
                handles.len()
            ),
        ));
    }
    let mut dups = [const { None::<OwnedHandle> }; MAX_HANDLES];
    let mut header = [0u8; 16 + 8 * MAX_HANDLES];
    header[..4].copy_from_slice(&BATCH_MAGIC);
    header[4..8].copy_from_slice(&sys::current_pid().to_ne_bytes());
    header[8..12].copy_from_slice(&(handles.len() as u32).to_ne_bytes());
    header[12..16].copy_from_slice(&data_len.to_ne_bytes());
    for (i, (handle, dup)) in handles.iter().zip(&mut dups).enumerate() {
        let owned = sys::duplicate(*handle)?;
        let at = 16 + 8 * i;
        header[at..at + 8].copy_from_slice(&(owned.as_raw_handle() as usize as u64).to_ne_bytes());
        *dup = Some(owned);
    }
    let header = &header[..16 + 8 * handles.len()];
    sys::send_all(socket, header)?;
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
    let mut header = [0u8; 16];
    sys::recv_exact(socket, &mut header)?;
    expect_magic(&header, BATCH_MAGIC, "send_with_handles")?;
    let (pid, count, data_len) = (
        u32_at(&header, 4),
        u32_at(&header, 8) as usize,
        u32_at(&header, 12) as usize,
    );
    if count > MAX_HANDLES {
        return Err(invalid_data(format!(
            "the record claims {count} handles, more than the {MAX_HANDLES} one may carry"
        )));
    }
    let mut values = [0u8; 8 * MAX_HANDLES];
    let values = &mut values[..8 * count];
    sys::recv_exact(socket, values)?;
    let values = values.chunks_exact(8).map(|v| u64_at(v, 0));
    let mut received = Received::default();
    let kept = data_len.min(data.len());
    received.bytes = kept;
    received.data_truncated = data_len > kept;
    if let Err(e) = recv_data(socket, &mut data[..kept], data_len - kept) {
        // The record will never be whole: its handles are closed in the
        // sender, where they wait.
        if let Ok(process) = open_sender(socket, pid) {
            values.for_each(|value| process.close(value));
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
