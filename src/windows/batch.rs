//! Several handles per record: data and up to [`MAX_HANDLES`] duplicates,
//! which the receiver takes with `DUPLICATE_CLOSE_SOURCE`.

use std::io;
use std::os::windows::io::{AsRawHandle, AsSocket, BorrowedHandle, BorrowedSocket, OwnedHandle};

use super::{fill, give_away, invalid_data, open_sender, send_whole, MAX_HANDLES};
use crate::record::{self, BatchHeader, Data, HandleValue, Incoming, Kind, Outgoing};
use crate::slots::{self, Slots};
use crate::sys;
use crate::Received;

/// The size of the buffer a receive drops the data that does not fit
/// into, a piece at a time.
pub(crate) const SINK_LEN: usize = 512;

/// Sends `data` with up to [`MAX_HANDLES`] handles in one record, in one
/// vectored `send`, and returns `data.len()`; the receiver is
/// [`recv_handles`].
///
/// Each handle is duplicated within this process as by [`send_handle`](super::send_handle), and the
/// receiver takes each with `DUPLICATE_CLOSE_SOURCE`, so the same caution
/// holds: this process must stay alive until the receiver has them. The
/// record is `FDPB`, this process's id, the handle count and the data
/// length (each a 32-bit number), the handle values (64-bit each), then
/// the data. Nothing is allocated.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for more than [`MAX_HANDLES`] handles or
/// more than 4 GiB of data; otherwise as [`send_handle`](super::send_handle).
///
/// [`ErrorKind::InvalidInput`]: io::ErrorKind::InvalidInput
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
/// io_fdpass::send_handles(&a, b"two", &[file.as_handle(), file.as_handle()])?;
///
/// let mut data = [0; 8];
/// let mut handles: [Option<OwnedHandle>; 4] = Default::default();
/// let got = io_fdpass::recv_handles(&b, &mut data, &mut handles)?;
/// assert_eq!((&data[..got.bytes], got.fds_received), (&b"two"[..], 2));
/// let received: Vec<OwnedHandle> = handles.iter_mut().filter_map(Option::take).collect();
/// # assert_eq!(received.len(), 2);
/// # Ok(())
/// # }
/// ```
pub fn send_handles(
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

/// Receives one record of [`send_handles`]: data into `data`,
/// handles into the empty slots of `handles`.
///
/// Each handle goes into the next empty (`None`) slot of `handles`, in
/// order; slots that hold a handle already are skipped, never overwritten.
/// The number of empty slots is the exact bound: handles beyond it are
/// closed in the sender without being taken and counted in
/// [`Received::fds_discarded`], and data beyond `data.len()` is read and
/// dropped ([`Received::data_truncated`]), so nothing is lost silently —
/// check [`Received::is_complete`]. Nothing is allocated. Received handles
/// are not inheritable, as in [`recv_handle`](super::recv_handle).
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
/// As [`recv_handle`](super::recv_handle). On an error, `handles` is left as it was. If any handle
/// value is bad, every handle of the record is closed, those already taken
/// and those still in the sender, and the error is
/// [`ErrorKind::InvalidData`]; the connection stays usable. If the record
/// is cut short, its handles are closed in the sender, and the error says
/// that the connection is out of step.
///
/// The pid in the record is the peer's word, as for [`recv_handle`](super::recv_handle): receive this
/// way only from peers you trust. A record that names this very process is
/// refused, as by [`recv_handle`](super::recv_handle), unless Windows confirms the peer is this process.
///
/// [`ErrorKind::WouldBlock`]: io::ErrorKind::WouldBlock
/// [`ErrorKind::InvalidData`]: io::ErrorKind::InvalidData
///
/// # Examples
///
/// See [`send_handles`].
pub fn recv_handles(
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
                (Ok(value), None) if got.fds_received < room => match process.fetch(value, true) {
                    Ok(handle) => {
                        taken[got.fds_received] = Some(handle);
                        got.fds_received += 1;
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
