//! Pass file descriptors from one process to another over a unix socket.
//!
//! io-fdpass keeps the two calls of Perl's [IO::FDPass] — [`send`] an fd,
//! [`recv`] an fd — and its wire format (one data byte `0` with an
//! `SCM_RIGHTS` control message), so it talks to IO::FDPass and to Python's
//! `socket.send_fds`/`recv_fds` in both directions. Beyond them:
//!
//! - [`send_with_fds`] / [`recv_with_fds`]: data and up to [`MAX_FDS`] fds
//!   in one message, received into caller storage with no allocation, and
//!   any truncation reported in [`Received`].
//! - [`send_many`] / [`recv_many`]: many IO::FDPass messages in one system
//!   call (`sendmmsg`/`recvmmsg` where the OS has them).
//! - Received fds are close-on-exec; sends never raise `SIGPIPE`; `EINTR` is
//!   retried; non-blocking sockets give [`WouldBlock`] and lose nothing.
//! - The receive path never leaks an fd, whatever the peer sends: surplus
//!   fds, fds with a wrong data byte, fds cut short by a full fd table are
//!   all closed, and the error says so.
//!
//! What it does not do: pass fds between machines, or over anything but a
//! unix socket on Unix. It does not collect fds that arrive in control
//! messages other than `SCM_RIGHTS`: don't enable Linux's `SO_PASSPIDFD` on
//! a socket you receive from with it, or each message's pidfd stays open.
//!
//! # Features
//!
//! - `tokio` (off by default): the module `io_fdpass::tokio`, the same calls as
//!   cancel-safe futures on tokio's unix sockets.
//!
//! # Example
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::os::unix::net::UnixStream;
//!
//! // In real use the two ends live in two processes.
//! let (parent, child) = UnixStream::pair()?;
//! let file = std::fs::File::open("Cargo.toml")?;
//! io_fdpass::send(&parent, &file)?;
//! let same_file = io_fdpass::recv(&child)?;
//! # drop(same_file);
//! # Ok(())
//! # }
//! ```
//!
//! # A stream carries bytes, not messages
//!
//! On a `SOCK_STREAM` socket, fds are attached to the first byte of the send
//! that carried them. A receive that reads that byte gets them; a receive
//! never returns the fds of two sends together. Keep both sides reading the
//! same byte counts (IO::FDPass reads exactly one byte per fd) or use
//! `SOCK_SEQPACKET`, which keeps message boundaries.
//!
//! # Platforms
//!
//! | OS | status |
//! |----|--------|
//! | Linux | tested, including against Perl's IO::FDPass and Python |
//! | macOS, FreeBSD, NetBSD, OpenBSD, DragonFly, illumos, Android | written for, not yet compile-checked in CI |
//!
//! [IO::FDPass]: https://metacpan.org/pod/IO::FDPass
//! [`WouldBlock`]: std::io::ErrorKind::WouldBlock

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

#[cfg(unix)]
mod many;
mod received;
mod sys;
#[cfg(all(unix, feature = "tokio"))]
pub mod tokio;
#[cfg(unix)]
mod unix;

#[cfg(unix)]
pub use many::{recv_many, send_many, ReceivedMany, BURST};
pub use received::Received;
#[cfg(unix)]
pub use unix::{recv, recv_with_fds, send, send_with_fds, FdPassExt, MAX_FDS};

/// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
