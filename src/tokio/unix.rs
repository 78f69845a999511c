//! The same calls for tokio's unix sockets, without blocking the runtime.
//!
//! Each function waits for readiness through tokio's
//! [`async_io`][async_io] and then makes the very
//! system call of the blocking API, once per readiness: on `WouldBlock`
//! tokio clears the readiness and the task sleeps until the socket is ready
//! again, so nothing spins and nothing blocks.
//!
//! The functions take a [`tokio::net::UnixStream`][UnixStream]
//! or a [`tokio::net::UnixDatagram`][UnixDatagram] (see
//! [`AsyncUnixSocket`]); their futures are `Send` whenever their arguments
//! are, so they can run inside `tokio::spawn`.
//!
//! # Received fds are not made non-blocking
//!
//! An fd received here shares its open file description, and with it the
//! `O_NONBLOCK` flag, with the sender's: usually it is blocking. Make a
//! received socket non-blocking (`set_nonblocking(true)`) before handing it
//! to tokio (`tokio::net::TcpListener::from_std` and the like), which
//! panics ("Registering a blocking socket") or blocks the runtime
//! otherwise.
//!
//! # Cancel safety
//!
//! Every function here is cancel safe. The system call that moves a message
//! is made inside a single poll and the future completes in that same poll,
//! so a future dropped at any point — never polled, pending, or woken but
//! not polled again — has sent or received nothing: the next [`recv_fd`] gets
//! the message it would have got, with all its fds. A [`send_fd`] that
//! returned `Ok` has sent; one dropped before that has sent nothing.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::net::UnixStream;
//!
//! let (a, b) = UnixStream::pair()?;
//! let file = std::fs::File::open("Cargo.toml")?;
//! io_fdpass::tokio::send_fd(&a, &file).await?;
//! let same_file = io_fdpass::tokio::recv_fd(&b).await?;
//! # drop(same_file);
//! # Ok(())
//! # }
//! ```
//!
//! [async_io]: https://docs.rs/tokio/1/tokio/net/struct.UnixStream.html#method.async_io
//! [UnixStream]: https://docs.rs/tokio/1/tokio/net/struct.UnixStream.html
//! [UnixDatagram]: https://docs.rs/tokio/1/tokio/net/struct.UnixDatagram.html

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ::tokio::io::Interest;
use ::tokio::net::{UnixDatagram, UnixStream};

use crate::{Received, ReceivedMany};

/// A tokio unix socket these functions work on: [`UnixStream`] or
/// [`UnixDatagram`].
///
/// [`UnixStream`]: https://docs.rs/tokio/1/tokio/net/struct.UnixStream.html
/// [`UnixDatagram`]: https://docs.rs/tokio/1/tokio/net/struct.UnixDatagram.html
///
/// This trait is sealed: it exists so that one function serves both types.
pub trait AsyncUnixSocket: AsFd + Sync + sealed::Sealed {
    /// Waits until the socket is ready for `interest`, then runs `f` until
    /// it returns something other than `WouldBlock` (tokio's `async_io`).
    #[doc(hidden)]
    fn ready_io<R: Send>(
        &self,
        interest: Interest,
        f: impl FnMut() -> io::Result<R> + Send,
    ) -> impl Future<Output = io::Result<R>> + Send;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::UnixStream {}
    impl Sealed for super::UnixDatagram {}
}

/// Both socket types have the same `async_io`; one body serves them.
macro_rules! impl_async_unix_socket {
    ($($socket:ty),*) => {$(
        impl AsyncUnixSocket for $socket {
            fn ready_io<R: Send>(
                &self,
                interest: Interest,
                f: impl FnMut() -> io::Result<R> + Send,
            ) -> impl Future<Output = io::Result<R>> + Send {
                self.async_io(interest, f)
            }
        }
    )*};
}

impl_async_unix_socket!(UnixStream, UnixDatagram);

/// Sends one fd, waiting until the socket is writable: [`crate::send_fd`].
///
/// # Errors
///
/// As [`crate::send_fd`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn send_fd(socket: &impl AsyncUnixSocket, fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    socket
        .ready_io(Interest::WRITABLE, || crate::send_fd(socket, fd))
        .await
}

/// Receives one fd, waiting until one arrives: [`crate::recv_fd`].
///
/// # Errors
///
/// As [`crate::recv_fd`], except that `WouldBlock` is waited out. A rejected
/// message's fds are closed before the error is returned.
///
/// # Examples
///
/// See the [module documentation](self).
pub async fn recv_fd(socket: &impl AsyncUnixSocket) -> io::Result<OwnedFd> {
    socket
        .ready_io(Interest::READABLE, || crate::recv_fd(socket))
        .await
}

/// Sends data with fds attached, waiting until the socket is writable:
/// [`crate::send_fds`].
///
/// # Errors
///
/// As [`crate::send_fds`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio::net::UnixDatagram;
///
/// let (a, b) = UnixDatagram::pair()?;
/// let stdin = std::io::stdin();
/// io_fdpass::tokio::send_fds(&a, b"hi", &[stdin.as_fd(), stdin.as_fd()]).await?;
///
/// let mut data = [0; 8];
/// let mut fds = [const { None }; 4];
/// let got = io_fdpass::tokio::recv_fds(&b, &mut data, &mut fds).await?;
/// assert_eq!((&data[..got.bytes], got.fds_received), (&b"hi"[..], 2));
/// # Ok(())
/// # }
/// ```
pub async fn send_fds(
    socket: &impl AsyncUnixSocket,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    socket
        .ready_io(Interest::WRITABLE, || crate::send_fds(socket, data, fds))
        .await
}

/// Receives data and fds, waiting until a message arrives:
/// [`crate::recv_fds`].
///
/// # Errors
///
/// As [`crate::recv_fds`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_fds`].
pub async fn recv_fds(
    socket: &impl AsyncUnixSocket,
    data: &mut [u8],
    fds: &mut [Option<OwnedFd>],
) -> io::Result<Received> {
    socket
        .ready_io(Interest::READABLE, || {
            crate::recv_fds(socket, &mut *data, &mut *fds)
        })
        .await
}

/// Sends several fds in one message, waiting until the socket is
/// writable: [`crate::send_batch`].
///
/// # Errors
///
/// As [`crate::send_batch`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`recv_batch`].
pub async fn send_batch(socket: &impl AsyncUnixSocket, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    socket
        .ready_io(Interest::WRITABLE, || crate::send_batch(socket, fds))
        .await
}

/// Receives one message of several fds, waiting until it arrives:
/// [`crate::recv_batch`].
///
/// # Errors
///
/// As [`crate::recv_batch`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdin = std::io::stdin();
/// io_fdpass::tokio::send_batch(&a, &[stdin.as_fd(), stdin.as_fd()]).await?;
///
/// let mut fds = [None, None];
/// assert_eq!(io_fdpass::tokio::recv_batch(&b, &mut fds).await?, 2);
/// # Ok(())
/// # }
/// ```
pub async fn recv_batch(
    socket: &impl AsyncUnixSocket,
    fds: &mut [Option<OwnedFd>],
) -> io::Result<usize> {
    socket
        .ready_io(Interest::READABLE, || crate::recv_batch(socket, &mut *fds))
        .await
}

/// Sends one `IO::FDPass` message per fd, in bursts, waiting until the socket
/// is writable: [`crate::send_many`].
///
/// Returns how many were sent, which is fewer than all when the socket's
/// buffer fills; call again with the rest. Cancel safe as every call here:
/// the messages counted in the result are all that were sent.
///
/// # Errors
///
/// As [`crate::send_many`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let stdout = std::io::stdout();
/// let fds = [stdout.as_fd(); 100];
/// let mut sent = 0;
/// while sent < fds.len() {
///     sent += io_fdpass::tokio::send_many(&a, &fds[sent..]).await?;
/// }
///
/// let mut received = [const { None }; 100];
/// let mut got = 0;
/// while got < 100 {
///     got += io_fdpass::tokio::recv_many(&b, &mut received).await?.fds_received;
/// }
/// # Ok(())
/// # }
/// ```
pub async fn send_many(socket: &impl AsyncUnixSocket, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    socket
        .ready_io(Interest::WRITABLE, || crate::send_many(socket, fds))
        .await
}

/// Receives the `IO::FDPass` messages that are waiting, waiting until at
/// least one is: [`crate::recv_many`].
///
/// # Errors
///
/// As [`crate::recv_many`], except that `WouldBlock` is waited out.
///
/// # Examples
///
/// See [`send_many`].
pub async fn recv_many(
    socket: &impl AsyncUnixSocket,
    fds: &mut [Option<OwnedFd>],
) -> io::Result<ReceivedMany> {
    socket
        .ready_io(Interest::READABLE, || crate::recv_many(socket, &mut *fds))
        .await
}
