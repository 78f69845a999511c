//! Windows: `IO::FDPass`'s way of passing a HANDLE over a stream socket, and
//! safer ways beside it.
//!
//! Each call drives the record rules of [`crate::record`] with the system
//! calls of [`crate::sys`], in steps that the tokio calls drive too: a
//! record goes out in one vectored send ([`send_whole`]) and is read as
//! [`record::Fill`] says, never past its end ([`fill`]).
//!
//! This file holds those steps and the ones several modes share; each mode
//! has a file of its own:
//!
//! - `plain.rs`: `IO::FDPass`'s own mode, [`send_handle`] and [`recv_handle`];
//! - `confirmed.rs`: the receiver confirms, [`send_confirmed`] and
//!   [`recv_confirmed`];
//! - `socket.rs`: a socket by `WSADuplicateSocketW`, [`send_socket`] and
//!   [`recv_socket`];
//! - `batch.rs`: data and several handles in one record,
//!   [`send_handles`] and [`recv_handles`].

use std::io::{self, ErrorKind};
use std::os::windows::io::{BorrowedSocket, IntoRawHandle, OwnedHandle};

use crate::record::{self, Fill, Incoming, Kind, Outgoing};
use crate::sys::{self, Process};

pub(crate) mod batch;
pub(crate) mod confirmed;
pub(crate) mod plain;
pub(crate) mod socket;

pub use crate::record::MAX_HANDLES;
pub use batch::{recv_handles, send_handles};
pub use confirmed::{recv_confirmed, send_confirmed};
pub use plain::{recv_handle, send_handle};
pub use socket::{recv_socket, send_socket};

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

/// Leaves a duplicate whose record went out open for the receiver, which
/// closes it here when it fetches it.
pub(crate) fn give_away(dup: OwnedHandle) {
    let _ = dup.into_raw_handle();
}

/// Opens the process a record names, to take handles from it and close
/// them there, once [`record::check_sender`] lets it: never this very
/// process on a peer's word alone (see [`sys::peer_pid`]).
fn open_sender(socket: BorrowedSocket<'_>, pid: u32) -> io::Result<Process> {
    record::check_sender(pid, sys::current_pid(), || sys::peer_pid(socket))?;
    Process::open(pid)
}

/// Reads the other side's answer; `WouldBlock` before it comes.
fn read_answer(socket: BorrowedSocket<'_>) -> io::Result<()> {
    let mut answer = Incoming::<1>::new(Kind::Answer);
    fill(socket, &mut answer)?;
    record::parse_answer(*answer.array())
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
