//! The Windows calls for tokio's [`TcpStream`], without blocking the
//! runtime.
//!
//! Each step of an exchange waits for readiness through tokio's
//! [`async_io`](TcpStream::async_io) and then makes the very calls of the
//! blocking API, once per readiness.
//!
//! # Cancel safety
//!
//! - [`send`], [`recv`], [`send_with_handles`], [`recv_with_handles`] and
//!   [`recv_confirmed`] are cancel safe: a record is read or written within
//!   one poll, so a future dropped at any point has moved nothing, and the
//!   next call gets the record whole. (A record whose first bytes have
//!   arrived is finished within that poll; the sender writes each record
//!   in one `send`, so the rest is there at once or in a moment.)
//! - [`send_confirmed`] is cancel safe until its record is sent; dropped
//!   while it waits for the receiver's answer, it leaves the duplicate open
//!   for the receiver, as [`send`] does, since the receiver may be taking
//!   it at that moment.
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
//! io_fdpass::tokio::send(&a, &file).await?;
//! let same_file = std::fs::File::from(io_fdpass::tokio::recv(&b).await?);
//! # drop(same_file);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::windows::io::{
    AsHandle, AsSocket, BorrowedHandle, IntoRawHandle, OwnedHandle, OwnedSocket,
};

use ::tokio::io::Interest;
use ::tokio::net::TcpStream;

use crate::windows as blocking;
use crate::{sys, Received};

/// Sends a handle the IO::FDPass way, waiting until the socket is writable:
/// [`crate::send`].
///
/// # Errors
///
/// As [`crate::send`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn send(socket: &TcpStream, handle: impl AsHandle) -> io::Result<()> {
    let handle = handle.as_handle();
    socket
        .async_io(Interest::WRITABLE, || crate::send(socket, handle))
        .await
}

/// Receives a handle sent the IO::FDPass way, waiting until one comes:
/// [`crate::recv`].
///
/// # Errors
///
/// As [`crate::recv`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn recv(socket: &TcpStream) -> io::Result<OwnedHandle> {
    socket
        .async_io(Interest::READABLE, || crate::recv(socket))
        .await
}

/// Sends data and handles in one record: [`crate::send_with_handles`].
///
/// # Errors
///
/// As [`crate::send_with_handles`], except that `WouldBlock` is waited out.
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
/// use std::os::windows::io::AsHandle;
/// let file = std::fs::File::open("Cargo.toml")?;
/// let handles = [file.as_handle(), file.as_handle()];
/// io_fdpass::tokio::send_with_handles(&a, b"two", &handles).await?;
///
/// let mut data = [0; 8];
/// let mut received = Vec::with_capacity(2);
/// let got = io_fdpass::tokio::recv_with_handles(&b, &mut data, &mut received).await?;
/// assert_eq!((&data[..got.bytes], received.len()), (&b"two"[..], 2));
/// # Ok(())
/// # }
/// ```
pub async fn send_with_handles(
    socket: &TcpStream,
    data: &[u8],
    handles: &[BorrowedHandle<'_>],
) -> io::Result<usize> {
    socket
        .async_io(Interest::WRITABLE, || {
            crate::send_with_handles(socket, data, handles)
        })
        .await
}

/// Receives one record of data and handles: [`crate::recv_with_handles`].
///
/// # Errors
///
/// As [`crate::recv_with_handles`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_with_handles`].
pub async fn recv_with_handles(
    socket: &TcpStream,
    data: &mut [u8],
    handles: &mut Vec<OwnedHandle>,
) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || {
            crate::recv_with_handles(socket, &mut *data, &mut *handles)
        })
        .await
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
    let (dup, record) = blocking::confirmed_record(handle.as_handle())?;
    socket
        .async_io(Interest::WRITABLE, || {
            sys::send_all(socket.as_socket(), &record)
        })
        .await?;
    // The receiver may be taking the duplicate from now on: a future
    // dropped while it waits must not close it.
    let mut offered = Offered(Some(dup));
    let answer = socket
        .async_io(Interest::READABLE, || {
            blocking::read_answer(socket.as_socket())
        })
        .await;
    match offered.0.take() {
        Some(dup) => blocking::settle(dup, answer),
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
    socket
        .async_io(Interest::READABLE, || crate::recv_confirmed(socket))
        .await
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
    let claim = socket
        .async_io(Interest::READABLE, || {
            blocking::read_socket_hello(socket.as_socket())
        })
        .await?;
    blocking::reply_socket(socket.as_socket(), passed.as_socket(), claim)?;
    socket
        .async_io(Interest::READABLE, || {
            blocking::read_answer(socket.as_socket())
        })
        .await
        .map_err(blocking::not_taken)
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
    let hello = blocking::socket_hello();
    socket
        .async_io(Interest::WRITABLE, || {
            sys::send_all(socket.as_socket(), &hello)
        })
        .await?;
    socket
        .async_io(Interest::READABLE, || {
            blocking::read_socket_reply(socket.as_socket())
        })
        .await
}
