//! Everything that touches the operating system, one file per OS family.
//!
//! The contract each backend file provides to the rest of the crate:
//!
//! Unix (`unix.rs`):
//! - `MAX_FDS`: the most fds one send may carry.
//! - `send_with_fds(socket, data, fds) -> io::Result<usize>`: one `sendmsg`
//!   with `SCM_RIGHTS`; never raises `SIGPIPE`; retries `EINTR`.
//! - `recv_with_fds(socket, data, keep) -> io::Result<Received>`: one
//!   `recvmsg`; every fd arrives close-on-exec and is offered to `keep`;
//!   every fd not kept is closed; retries `EINTR`.
//! - `is_datagram(socket) -> io::Result<bool>`.
//!
//! A port to another Unix changes only the `cfg` names set in `build.rs`
//! (and this file, where the OS lacks a mechanism altogether).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use self::unix::*;

#[cfg(not(unix))]
compile_error!("io-fdpass supports Unix-like systems; this target is not one of them");
