//! The socket mode: the receiver names its pid, the sender duplicates the
//! socket for it with `WSADuplicateSocketW`, and the receiver answers.

use std::io;
use std::os::windows::io::{AsSocket, BorrowedSocket, OwnedSocket};

use super::{answer, check_peer, fill, read_answer, send_whole, waiting};
use crate::record::{self, Incoming, Kind, Outgoing};
use crate::sys;

/// The length of the `WSAPROTOCOL_INFOW` in [`send_socket`]'s reply, and
/// of the whole reply.
pub(crate) const INFO_LEN: usize = sys::PROTOCOL_INFO_LEN;
pub(crate) const REPLY_LEN: usize = 1 + INFO_LEN;

/// Sends a socket so that the receiver gets a working socket of its own,
/// with `WSADuplicateSocketW`; the receiver is [`recv_socket`].
///
/// A SOCKET is not an ordinary handle: Microsoft does not support passing
/// one with `DuplicateHandle` (which is what [`send_handle`](super::send_handle) does; under Wine the
/// result cannot send). `WSADuplicateSocketW` needs the receiver's pid, so
/// the receiver speaks first: `FDPS` and its pid. Where Windows can tell
/// the peer's pid (as in [`recv_confirmed`](super::recv_confirmed)) the claim is checked, so that
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
/// [`ErrorKind::WouldBlock`]: io::ErrorKind::WouldBlock
/// [`ErrorKind::InvalidData`]: io::ErrorKind::InvalidData
/// [`ErrorKind::UnexpectedEof`]: io::ErrorKind::UnexpectedEof
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
/// [`ErrorKind::WouldBlock`]: io::ErrorKind::WouldBlock
/// [`ErrorKind::UnexpectedEof`]: io::ErrorKind::UnexpectedEof
/// [`ErrorKind::InvalidData`]: io::ErrorKind::InvalidData
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
