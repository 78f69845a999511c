//! Pass file descriptors from one process to another over a unix socket —
//! and, on Windows, HANDLEs over any stream socket.
//!
//! io-fdpass keeps the two calls of Perl's [IO::FDPass] — `send` an fd,
//! `recv` an fd, here `send_fd`/`recv_fd` (`send_handle`/`recv_handle` on
//! Windows) — and its wire format (one data byte `0` with an
//! `SCM_RIGHTS` control message), so it talks to `IO::FDPass` and to Python's
//! `socket.send_fds`/`recv_fds` in both directions. Beyond them:
//!
#![cfg_attr(
    unix,
    doc = "\
- [`send_fds`] / [`recv_fds`]: data and up to [`MAX_FDS`] fds
  in one message, received into caller storage with no allocation, and
  any truncation reported in [`Received`].
- [`send_many`] / [`recv_many`]: many `IO::FDPass` messages in one system
  call (`sendmmsg`/`recvmmsg` where the OS has them).
- [`recv_batch`]: one message of several fds, judged whole.
- [`activation`]: adopt the fds a program is started with (`LISTEN_FDS`,
  from systemd, `systemd-socket-activate`, `fdpass` or `systemfd`), checked
  and typed.
- [`notify`]: systemd's notify protocol, its readiness and its fd store.
- [`restart`]: restart a server with no connection refused: its
  listeners, its state and its established connections go to the next
  generation, which the old one waits for (blocking, or as a tokio
  future).
- [`process`]: copy an fd out of another process that knows nothing of
  fd passing (`pidfd_getfd`, Linux and Android), and list what its fds
  are; [`FdKind`] says what an fd is, in this process or another.
- [`peer_credentials`]: who is at the other end of a unix socket, and
  [`PeerTrust`]: whether to trust them.
- [`connect_unix_retrying`]: connect by a [`Deadline`], never blocked by
  the listener, with a grace period for one still starting.
- [`anonymous_file`]: a file with no name (a memfd), for bytes that go to
  another process through an fd."
)]
#![cfg_attr(
    windows,
    doc = "\
- [`send_handles`] / [`recv_handles`]: data and up to
  [`MAX_HANDLES`] handles in one record, received into caller storage
  with no allocation, and any truncation reported in [`Received`].
- [`send_confirmed`] / [`recv_confirmed`] and [`send_socket`] /
  [`recv_socket`]: the safer Windows modes (see [Windows](#windows)).
- [`activation`], [`notify`] and [`restart`]: hand listening sockets to
  a program by systemfd's protocol, with their names, hear that it is
  ready, and restart a server without refusing a connection."
)]
//! - Received fds are close-on-exec; sends never raise `SIGPIPE`; `EINTR` is
//!   retried; non-blocking sockets give [`WouldBlock`] and lose nothing.
//! - The receive path never leaks an fd, whatever the peer sends: surplus
//!   fds, fds with a wrong data byte, fds cut short by a full fd table are
//!   all closed, and the error says so. So is the pidfd Linux adds to each
//!   message when the socket has `SO_PASSPIDFD` on: only fds the peer sent
//!   are returned.
//!
//! What it does not do: pass fds between machines, or over anything but a
//! unix socket on Unix.
//!
//! # Features
//!
//! - `tokio` (off by default): the module `io_fdpass::tokio`, the same calls as
//!   futures on tokio's unix sockets (on Windows, on its `TcpStream`), cancel
//!   safe where the docs say so; and on Unix `io_fdpass::holder::Server`, a
//!   holder served inside the program.
//!
//! # Example
//!
//! ```
//! # #[cfg(unix)]
//! # fn main() -> std::io::Result<()> {
//! use std::os::unix::net::UnixStream;
//!
//! // In real use the two ends live in two processes.
//! let (parent, child) = UnixStream::pair()?;
//! let file = std::fs::File::open("Cargo.toml")?;
//! io_fdpass::send_fd(&parent, &file)?;
//! let same_file = io_fdpass::recv_fd(&child)?;
//! # drop(same_file);
//! # Ok(())
//! # }
//! # #[cfg(not(unix))]
//! # fn main() {}
//! ```
//!
//! # A stream carries bytes, not messages
//!
//! On a `SOCK_STREAM` socket, fds are attached to the first byte of the send
//! that carried them. A receive that reads that byte gets them; a receive
//! never returns the fds of two sends together. Keep both sides reading the
//! same byte counts (`IO::FDPass` reads exactly one byte per fd) or use
//! `SOCK_SEQPACKET`, which keeps message boundaries.
//!
//! # Windows
//!
//! Windows has no `SCM_RIGHTS`. `IO::FDPass`'s way, kept by `send_handle` and `recv_handle`
//! there: the sender duplicates the HANDLE within its own process and
//! writes its pid and the duplicate's value to any connected stream socket
//! (TCP, or `AF_UNIX`); the receiver opens the sender with
//! `PROCESS_DUP_HANDLE` and takes the handle with `DuplicateHandle` and
//! `DUPLICATE_CLOSE_SOURCE`. What each call guarantees:
//!
//! - `send_handle` / `recv_handle` — `IO::FDPass`'s format. The sender must stay alive until
//!   the receiver has fetched the handle, and if the receiver never does,
//!   the duplicate stays open in the sender. The pid is the peer's word, and
//!   the receiver closes the handle the record names in that process: a
//!   hostile peer can name another process the receiver may open and have
//!   one of its handles closed, so receive this way only from peers you
//!   trust. A record that names the receiver itself is refused unless
//!   Windows confirms that the peer is the receiver, so no peer can close
//!   the receiver's own handles. Received handles are not inheritable; a
//!   null or pseudo-handle value is rejected. Each record goes out in one
//!   send and, once it has begun to arrive, is read to its end, so that no
//!   `WouldBlock` falls inside a record; the tokio calls never wait for the
//!   rest, they keep what has come.
//! - `send_confirmed` / `recv_confirmed` — the receiver takes its own copy
//!   and answers; the sender then closes its duplicate, and closes it too
//!   when the receiver leaves without answering, so nothing is left behind
//!   and the sender may exit as soon as the call returns. The receiver never
//!   closes a handle in the process a record names, so a hostile peer can
//!   at most have a handle copied. The pid is checked against the socket's
//!   peer wherever Windows can tell it: on `AF_UNIX`
//!   (`SIO_AF_UNIX_GETPEERPID`), and over TCP when both ends are on this
//!   machine (the connection table of `GetExtendedTcpTable`).
//! - `send_socket` / `recv_socket` — passes a SOCKET the way Microsoft
//!   supports (`WSADuplicateSocketW`; `DuplicateHandle` of a socket is not
//!   supported): the receiver sends its pid first, checked as in
//!   `recv_confirmed` so that a peer cannot have the socket duplicated into
//!   another process.
//! - `send_handles` / `recv_handles` — data and up to
//!   `MAX_HANDLES` handles in one record, received into caller storage; a
//!   bad handle value closes every handle of the record, on both sides. The
//!   pid is the peer's word, as for `recv_handle`, with the same refusal of records
//!   that name the receiver.
//!
//! # Platforms
//!
//! | OS | status |
//! |----|--------|
//! | Linux | tested, including against Perl's IO::FDPass and Python |
//! | Windows | tested under Wine (`x86_64-win7-windows-gnu`), with a second process |
//! | macOS, FreeBSD, NetBSD, OpenBSD, DragonFly, illumos, Android | compile-checked in CI |
//!
//! [IO::FDPass]: https://metacpan.org/pod/IO::FDPass
//! [`WouldBlock`]: std::io::ErrorKind::WouldBlock

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

#[cfg_attr(windows, path = "activation/windows.rs")]
pub mod activation;
#[cfg(unix)]
mod anonymous;
#[cfg(unix)]
mod connect;
#[cfg(unix)]
mod deadline;
#[cfg(unix)]
mod fd_kind;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg_attr(windows, path = "holder/windows.rs")]
pub mod holder;
#[cfg(unix)]
mod many;
mod names;
#[cfg_attr(windows, path = "notify/windows.rs")]
pub mod notify;
mod peer;
#[cfg(unix)]
pub mod process;
#[cfg(unix)]
#[cfg_attr(not(fdpass_linux_kernel), allow(dead_code))]
mod procfs;
mod received;
#[cfg(any(windows, test, fuzzing))]
mod record;
#[cfg_attr(windows, path = "restart/windows.rs")]
pub mod restart;
mod slots;
mod sys;
#[cfg(feature = "tokio")]
#[cfg_attr(unix, path = "tokio/unix.rs")]
#[cfg_attr(windows, path = "tokio/windows.rs")]
pub mod tokio;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;
#[cfg(unix)]
mod wire;

#[cfg(unix)]
pub use anonymous::anonymous_file;
#[cfg(unix)]
pub use connect::{connect_unix, connect_unix_retrying};
#[cfg(unix)]
pub use deadline::Deadline;
#[cfg(unix)]
pub use fd_kind::{FdKind, SocketAddress, SocketFamily, SocketInfo, SocketType};
#[cfg(unix)]
pub use many::{recv_many, send_many, ReceivedMany, MAX_BURST};
#[cfg(windows)]
pub use peer::current_user;
#[cfg(unix)]
pub use peer::refuse_fds;
pub use peer::{peer_credentials, PeerCredentials, PeerTrust};
pub use received::Received;
#[cfg(unix)]
pub use unix::{recv_batch, recv_fd, recv_fds, send_batch, send_fd, send_fds, FdPassExt, MAX_FDS};
#[cfg(windows)]
pub use windows::{
    recv_confirmed, recv_handle, recv_handles, recv_socket, send_confirmed, send_handle,
    send_handles, send_socket, MAX_HANDLES,
};

/// The README's example runs as a doctest, so that it stays true.
#[cfg(all(doctest, unix))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
