//! The records of the Windows calls as bytes: how each is laid out, made,
//! checked and parsed, and, for a record that arrives in pieces, how many
//! bytes it still needs and where they go.
//!
//! Pure code: no system calls and no Windows types. The blocking calls and
//! the tokio calls drive the same rules, so a rule lives here once, and the
//! rules are unit-tested (and can be fuzzed) on any platform.
//!
//! Both ends of a connection are on one machine (the receiver opens the
//! sender's process), so numbers are in native byte order, as `IO::FDPass`
//! writes them.
//!
//! | record | sent by | bytes |
//! |--------|---------|-------|
//! | `IO::FDPass`'s | `send_handle` | pid (4), handle value (pointer-sized) |
//! | confirmed | `send_confirmed` | `FDPC`, pid (4), handle value (8) |
//! | hello | `recv_socket` | `FDPS`, pid (4) |
//! | reply | `send_socket` | status (1); after a `0`, a `WSAPROTOCOL_INFOW` |
//! | batch | `send_handles` | `FDPB`, pid (4), handle count (4), data length (4), the handle values (8 each), the data |
//! | answer | `recv_confirmed`, `recv_socket` | status (1) |
//!
//! A status is `0` for success. The magics, read as numbers, are each 2
//! more than a multiple of 4, which no Windows process id is, so an
//! `IO::FDPass` receiver that reads one as a pid opens no process.

// Until the Unix side uses it, only the tests and the fuzz targets do off
// Windows. The items are `pub` so that `crate::fuzzing` can hand them to the
// fuzz targets; the module itself is private, and none of it is the
// crate's API, so the lints for an API's docs do not apply.
#![cfg_attr(not(windows), allow(dead_code))]
#![cfg_attr(fuzzing, allow(clippy::must_use_candidate, clippy::missing_errors_doc))]

use std::io::{self, ErrorKind, IoSlice};
use std::mem::size_of;

/// The most handles one [`send_handles`](crate::send_handles)
/// may carry (the same as one Linux message may carry fds).
pub const MAX_HANDLES: usize = 253;

const CONFIRMED_MAGIC: [u8; 4] = *b"FDPC";
const SOCKET_MAGIC: [u8; 4] = *b"FDPS";
const BATCH_MAGIC: [u8; 4] = *b"FDPB";

/// The length of `IO::FDPass`'s record.
pub const PLAIN_LEN: usize = 4 + size_of::<usize>();
/// The length of a confirmed record.
pub const CONFIRMED_LEN: usize = 16;
/// The length of a hello.
pub const HELLO_LEN: usize = 8;
/// The length of a batch record's fixed header.
pub const HEADER_LEN: usize = 16;
/// The length of one handle value in a batch record.
const VALUE_LEN: usize = 8;
/// The most a batch record's head (header and handle values) can take.
pub const MAX_HEAD_LEN: usize = HEADER_LEN + VALUE_LEN * MAX_HANDLES;

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut number = [0; 4];
    number.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(number)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut number = [0; 8];
    number.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(number)
}

/// Checks a record's magic against the bytes of it seen so far: a wrong
/// byte is an error as soon as it is seen.
fn check_magic(seen: &[u8], magic: [u8; 4], call: &str) -> io::Result<()> {
    let n = seen.len().min(magic.len());
    if seen[..n] == magic[..n] {
        Ok(())
    } else {
        Err(invalid_data(format!(
            "the peer did not send a record of {call} (is it using the matching call?)"
        )))
    }
}

/// Whether a handle value received from a peer can name a real handle:
/// not null, and not one of the pseudo-handles (-1 the current process,
/// -2 the current thread, -3 to -6 tokens), which would name the receiver's
/// own process or thread instead of anything the sender has.
pub fn is_real_handle_value(value: u64) -> bool {
    let signed = value as i64;
    !(-16..=0).contains(&signed)
}

/// A handle value from a peer that can name a handle of the peer's
/// (see [`is_real_handle_value`]); only such a value is ever given to
/// `DuplicateHandle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleValue(u64);

impl HandleValue {
    /// Checks `value`: [`ErrorKind::InvalidData`] for a null or
    /// pseudo-handle.
    pub fn new(value: u64) -> io::Result<HandleValue> {
        if is_real_handle_value(value) {
            Ok(HandleValue(value))
        } else {
            Err(invalid_data(format!(
                "the peer sent {value:#x}, a null or pseudo-handle, not a handle"
            )))
        }
    }

    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What a record offers: the process that holds a handle, as the peer
/// claims it, and the handle's value in that process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The process the record names.
    pub pid: u32,
    /// The handle's value there, unchecked.
    pub value: u64,
}

/// Checks the process a record names before it is opened to take handles
/// from it and close them there: `claimed` is the pid the record names,
/// `own` this process's, and `peer` tells the socket's peer where Windows
/// can (it is asked only when the record names this process). A record may
/// name this very process only if Windows confirms that the peer is this
/// process: on a peer's word alone, `DUPLICATE_CLOSE_SOURCE` would close
/// whichever handle of this process the record names.
///
/// # Errors
///
/// [`ErrorKind::InvalidData`] for a record that names this process from a
/// peer that is not confirmed to be it.
pub fn check_sender(claimed: u32, own: u32, peer: impl FnOnce() -> Option<u32>) -> io::Result<()> {
    if claimed == own && peer() != Some(own) {
        return Err(invalid_data(format!(
            "the record names this process ({own}) as its sender, but Windows does not confirm \
             that the peer is this process; no handle of this process was touched"
        )));
    }
    Ok(())
}

/// `IO::FDPass`'s record: `pid`, then the pointer-sized `value`.
pub fn plain(pid: u32, value: usize) -> [u8; PLAIN_LEN] {
    let mut record = [0; PLAIN_LEN];
    record[..4].copy_from_slice(&pid.to_ne_bytes());
    record[4..].copy_from_slice(&value.to_ne_bytes());
    record
}

/// Parses `IO::FDPass`'s record. The value is sign-extended, so that a
/// 32-bit peer's pseudo-handles stay pseudo-handles.
pub fn parse_plain(record: &[u8; PLAIN_LEN]) -> Offer {
    let mut value = [0; size_of::<usize>()];
    value.copy_from_slice(&record[4..]);
    Offer {
        pid: u32_at(record, 0),
        value: usize::from_ne_bytes(value) as isize as u64,
    }
}

/// The record of `send_confirmed`.
pub fn confirmed(pid: u32, value: u64) -> [u8; CONFIRMED_LEN] {
    let mut record = [0; CONFIRMED_LEN];
    record[..4].copy_from_slice(&CONFIRMED_MAGIC);
    record[4..8].copy_from_slice(&pid.to_ne_bytes());
    record[8..].copy_from_slice(&value.to_ne_bytes());
    record
}

/// Parses the record of `send_confirmed`: [`ErrorKind::InvalidData`] for
/// a record of another call.
pub fn parse_confirmed(record: &[u8; CONFIRMED_LEN]) -> io::Result<Offer> {
    check_magic(record, CONFIRMED_MAGIC, "send_confirmed")?;
    Ok(Offer {
        pid: u32_at(record, 4),
        value: u64_at(record, 8),
    })
}

/// The hello of `recv_socket`: the pid the socket is to be duplicated for.
pub fn hello(pid: u32) -> [u8; HELLO_LEN] {
    let mut record = [0; HELLO_LEN];
    record[..4].copy_from_slice(&SOCKET_MAGIC);
    record[4..].copy_from_slice(&pid.to_ne_bytes());
    record
}

/// Parses a hello, giving the pid the peer claims to be:
/// [`ErrorKind::InvalidData`] for a record of another call.
pub fn parse_hello(record: &[u8; HELLO_LEN]) -> io::Result<u32> {
    check_magic(record, SOCKET_MAGIC, "recv_socket")?;
    Ok(u32_at(record, 4))
}

/// A status byte, the answer of the receiving side and the start of
/// `send_socket`'s reply: `0` for success.
pub fn status(ok: bool) -> [u8; 1] {
    [u8::from(!ok)]
}

/// Reads the other side's answer.
pub fn parse_answer(answer: [u8; 1]) -> io::Result<()> {
    match answer {
        [0] => Ok(()),
        _ => Err(io::Error::other("the peer could not take it")),
    }
}

/// Parses `send_socket`'s reply, giving the `info_len` bytes of its
/// `WSAPROTOCOL_INFOW`: [`ErrorKind::InvalidData`] if the sender said it
/// could not duplicate the socket.
pub fn parse_reply(reply: &[u8], info_len: usize) -> io::Result<&[u8]> {
    match reply.split_first() {
        Some((0, info)) if info.len() == info_len => Ok(info),
        _ => Err(invalid_data(
            "the sender could not duplicate the socket for this process",
        )),
    }
}

/// The fixed header of a batch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The process that holds the handles, as the peer claims it.
    pub pid: u32,
    /// How many handle values follow the header.
    pub count: usize,
    /// How many data bytes follow the handle values.
    pub data_len: usize,
}

impl BatchHeader {
    /// The header of a record to send: [`ErrorKind::InvalidInput`] for
    /// more than [`MAX_HANDLES`] handles or more than 4 GiB of data.
    pub fn new(pid: u32, count: usize, data_len: usize) -> io::Result<BatchHeader> {
        if count > MAX_HANDLES {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("at most {MAX_HANDLES} handles go in one record, not {count}"),
            ));
        }
        if u32::try_from(data_len).is_err() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "at most 4 GiB of data go in one record",
            ));
        }
        Ok(BatchHeader {
            pid,
            count,
            data_len,
        })
    }

    /// Parses the header from the bytes of a record seen so far: `None`
    /// until all of it is there; [`ErrorKind::InvalidData`] as soon as the
    /// bytes are not a batch record's, or claim more than [`MAX_HANDLES`]
    /// handles.
    pub fn parse(seen: &[u8]) -> io::Result<Option<BatchHeader>> {
        check_magic(seen, BATCH_MAGIC, "send_handles")?;
        if seen.len() < HEADER_LEN {
            return Ok(None);
        }
        let count = u32_at(seen, 8) as usize;
        if count > MAX_HANDLES {
            return Err(invalid_data(format!(
                "the record claims {count} handles, more than the {MAX_HANDLES} one may carry"
            )));
        }
        Ok(Some(BatchHeader {
            pid: u32_at(seen, 4),
            count,
            data_len: u32_at(seen, 12) as usize,
        }))
    }

    /// The record's head as it is sent: the header, then `values`, the
    /// first [`count`](Self::count) of which are taken.
    pub fn write<'a>(
        &self,
        values: impl IntoIterator<Item = u64>,
        head: &'a mut [u8; MAX_HEAD_LEN],
    ) -> &'a [u8] {
        head[..4].copy_from_slice(&BATCH_MAGIC);
        head[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        head[8..12].copy_from_slice(&(self.count as u32).to_ne_bytes());
        head[12..16].copy_from_slice(&(self.data_len as u32).to_ne_bytes());
        let slots = head[HEADER_LEN..].chunks_exact_mut(VALUE_LEN);
        for (slot, value) in slots.zip(values).take(self.count) {
            slot.copy_from_slice(&value.to_ne_bytes());
        }
        &head[..self.head_len()]
    }

    /// The length of the head: the header and the handle values.
    pub fn head_len(&self) -> usize {
        HEADER_LEN + VALUE_LEN * self.count
    }
}

/// The handle values in a batch record's head.
pub fn batch_values(head: &[u8]) -> impl Iterator<Item = u64> + '_ {
    head[HEADER_LEN.min(head.len())..]
        .chunks_exact(VALUE_LEN)
        .map(|value| u64_at(value, 0))
}

/// The records a receive reads into an [`Incoming`]; each knows its
/// length from the bytes seen of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `IO::FDPass`'s record.
    Plain,
    /// The record of `send_confirmed`.
    Confirmed,
    /// The hello of `recv_socket`.
    Hello,
    /// The reply of `send_socket`, whose `WSAPROTOCOL_INFOW` is
    /// `info_len` bytes long.
    Reply {
        /// The length of the `WSAPROTOCOL_INFOW`.
        info_len: usize,
    },
    /// An answer.
    Answer,
    /// A batch record's head; its data is read apart (see [`Data`]).
    BatchHead,
}

impl Kind {
    /// How many bytes the record has in all, as far as `seen`, the bytes
    /// of it seen so far, tell; [`ErrorKind::InvalidData`] as soon as they
    /// break the format. Once `seen` is that long, the record is whole.
    pub fn needed(self, seen: &[u8]) -> io::Result<usize> {
        Ok(match self {
            Kind::Plain => PLAIN_LEN,
            Kind::Confirmed => CONFIRMED_LEN,
            Kind::Hello => HELLO_LEN,
            Kind::Reply { info_len } => match seen.first() {
                Some(0) => 1 + info_len,
                _ => 1,
            },
            Kind::Answer => 1,
            Kind::BatchHead => match BatchHeader::parse(seen)? {
                Some(header) => header.head_len(),
                None => HEADER_LEN,
            },
        })
    }
}

/// The error of a connection that ended before a record was whole;
/// `started` if any of it had come.
pub fn closed(started: bool) -> io::Error {
    io::Error::new(
        ErrorKind::UnexpectedEof,
        if started {
            "the peer closed the connection in the middle of a record"
        } else {
            "the peer closed the connection before sending a record"
        },
    )
}

/// Something a receive fills as bytes arrive: an [`Incoming`] record or a
/// batch record's [`Data`]. A receive asks where the next bytes go, reads
/// at most that many, and says how many came; it never reads past the
/// record, so what follows it stays in the socket.
pub trait Fill {
    /// Where the next bytes go; empty once everything has come.
    /// [`ErrorKind::InvalidData`] as soon as the bytes so far break the
    /// format.
    fn unfilled(&mut self) -> io::Result<&mut [u8]>;
    /// Takes note that `n` bytes went into the last [`unfilled`](Fill::unfilled).
    fn filled(&mut self, n: usize);
    /// Whether any byte of the record has come.
    fn started(&self) -> bool;
}

/// A record of one [`Kind`] as it arrives, in a buffer of `N` bytes, at
/// least the record's length. A partial read is state, not an error: what
/// has come is kept until the rest does.
pub struct Incoming<const N: usize> {
    kind: Kind,
    bytes: [u8; N],
    got: usize,
}

impl<const N: usize> Incoming<N> {
    /// A record of `kind` of which nothing has come yet.
    pub fn new(kind: Kind) -> Self {
        Incoming {
            kind,
            bytes: [0; N],
            got: 0,
        }
    }

    /// The record's bytes that have come: all of it once
    /// [`unfilled`](Fill::unfilled) is empty.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.got]
    }

    /// The whole buffer: the record, for a record of exactly `N` bytes.
    pub fn array(&self) -> &[u8; N] {
        &self.bytes
    }
}

impl<const N: usize> Fill for Incoming<N> {
    fn unfilled(&mut self) -> io::Result<&mut [u8]> {
        let needed = self.kind.needed(&self.bytes[..self.got])?;
        debug_assert!(
            needed <= N,
            "a buffer of {N} bytes for a {needed}-byte record"
        );
        Ok(&mut self.bytes[self.got..needed.min(N)])
    }

    fn filled(&mut self, n: usize) {
        self.got = (self.got + n).min(N);
    }

    fn started(&self) -> bool {
        self.got > 0
    }
}

/// The data of a batch record after its head, as it arrives: what fits
/// goes into the caller's buffer, the rest into a sink, dropped.
pub struct Data<'a> {
    kept: &'a mut [u8],
    sink: &'a mut [u8],
    dropped: usize,
    got: usize,
}

impl<'a> Data<'a> {
    /// The data of the record `header` begins, into `buffer`; `sink`
    /// takes, a piece at a time, what does not fit.
    pub fn new(header: &BatchHeader, buffer: &'a mut [u8], sink: &'a mut [u8]) -> Self {
        let kept = header.data_len.min(buffer.len());
        Data {
            kept: &mut buffer[..kept],
            sink,
            dropped: header.data_len - kept,
            got: 0,
        }
    }

    /// How many bytes went into the caller's buffer.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Whether some of the data did not fit and was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }
}

impl Fill for Data<'_> {
    fn unfilled(&mut self) -> io::Result<&mut [u8]> {
        let kept = self.kept.len();
        Ok(if self.got < kept {
            &mut self.kept[self.got..]
        } else {
            let left = kept + self.dropped - self.got;
            let n = left.min(self.sink.len());
            &mut self.sink[..n]
        })
    }

    fn filled(&mut self, n: usize) {
        self.got = (self.got + n).min(self.kept.len() + self.dropped);
    }

    fn started(&self) -> bool {
        // The record's head came before its data.
        true
    }
}

/// A record on its way out, in up to `P` parts that go in one vectored
/// send: what is left to send, and whether any of it has gone.
pub struct Outgoing<'a, const P: usize> {
    parts: [IoSlice<'a>; P],
    /// How many of `parts` have gone whole.
    done: usize,
    started: bool,
}

impl<'a, const P: usize> Outgoing<'a, P> {
    /// A record of `parts`, none of it sent.
    pub fn new(parts: [&'a [u8]; P]) -> Self {
        let mut outgoing = Outgoing {
            parts: parts.map(IoSlice::new),
            done: 0,
            started: false,
        };
        outgoing.skip_empty();
        outgoing
    }

    /// What is left to send; empty once all has gone.
    pub fn rest(&self) -> &[IoSlice<'a>] {
        &self.parts[self.done..]
    }

    /// Takes note that a send took `n` bytes of [`rest`](Self::rest).
    pub fn sent(&mut self, n: usize) {
        self.started |= n > 0;
        let mut rest = &mut self.parts[self.done..];
        IoSlice::advance_slices(&mut rest, n);
        self.done = P - rest.len();
        self.skip_empty();
    }

    fn skip_empty(&mut self) {
        while self
            .parts
            .get(self.done)
            .is_some_and(|part| part.is_empty())
        {
            self.done += 1;
        }
    }

    /// Whether all of it has gone.
    pub fn is_done(&self) -> bool {
        self.done == P
    }

    /// Whether any byte has gone: from then on the record must be
    /// finished, or the stream is out of step.
    pub fn started(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_pseudo_handles_are_not_real() {
        for value in [0, u64::MAX, u64::MAX - 1, u64::MAX - 5, -16i64 as u64] {
            assert!(!is_real_handle_value(value), "{value:#x}");
            let err = HandleValue::new(value).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData);
            assert!(err.to_string().contains("pseudo-handle"), "{err}");
        }
        for value in [4, 0x40, 0x7fff_fffc, u64::from(u32::MAX), -17i64 as u64] {
            assert!(is_real_handle_value(value), "{value:#x}");
            assert_eq!(HandleValue::new(value).unwrap().get(), value);
        }
    }

    #[test]
    fn a_record_may_name_this_process_only_from_a_confirmed_peer() {
        // Another process: the peer is not even asked.
        assert!(check_sender(8, 4, || panic!("asked")).is_ok());
        assert!(check_sender(4, 4, || Some(4)).is_ok());
        for peer in [None, Some(8)] {
            let err = check_sender(4, 4, || peer).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData);
            assert!(err.to_string().contains("no handle"), "{err}");
        }
    }

    #[test]
    fn plain_records_round_trip_and_sign_extend() {
        let record = plain(1234, 0x48);
        assert_eq!(&record[..4], &1234u32.to_ne_bytes());
        assert_eq!(
            parse_plain(&record),
            Offer {
                pid: 1234,
                value: 0x48
            }
        );
        // The current-process pseudo-handle stays -1 whatever the width.
        assert_eq!(parse_plain(&plain(1, usize::MAX)).value, u64::MAX);
        assert_eq!(Kind::Plain.needed(&[]).unwrap(), PLAIN_LEN);
    }

    #[test]
    fn confirmed_records_round_trip_and_reject_others() {
        let record = confirmed(8, 0x1234_5678_9abc);
        assert_eq!(&record[..4], b"FDPC");
        assert_eq!(
            parse_confirmed(&record).unwrap(),
            Offer {
                pid: 8,
                value: 0x1234_5678_9abc
            }
        );
        let mut other = record;
        other[..4].copy_from_slice(b"FDPB");
        let err = parse_confirmed(&other).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("send_confirmed"), "{err}");
        // An IO::FDPass record where a confirmed one belongs.
        let mut fdpass = [0; CONFIRMED_LEN];
        fdpass[..PLAIN_LEN].copy_from_slice(&plain(8, 0x40));
        assert!(parse_confirmed(&fdpass).is_err());
        assert_eq!(Kind::Confirmed.needed(&record[..3]).unwrap(), CONFIRMED_LEN);
    }

    #[test]
    fn hellos_round_trip_and_reject_others() {
        let record = hello(4242);
        assert_eq!(&record[..4], b"FDPS");
        assert_eq!(parse_hello(&record).unwrap(), 4242);
        let err = parse_hello(b"FDPC\0\0\0\0").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("recv_socket"), "{err}");
        assert_eq!(Kind::Hello.needed(&[]).unwrap(), HELLO_LEN);
    }

    #[test]
    fn no_magic_is_a_process_id() {
        // Windows process ids are multiples of 4.
        for magic in [CONFIRMED_MAGIC, SOCKET_MAGIC, BATCH_MAGIC] {
            assert_eq!(u32::from_ne_bytes(magic) % 4, 2, "{magic:?}");
        }
    }

    #[test]
    fn statuses_and_answers() {
        assert_eq!(status(true), [0]);
        assert_eq!(status(false), [1]);
        assert!(parse_answer(status(true)).is_ok());
        for byte in [1, 2, 0xff] {
            let err = parse_answer([byte]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Other);
        }
        assert_eq!(Kind::Answer.needed(&[]).unwrap(), 1);
    }

    #[test]
    fn a_reply_is_one_byte_or_the_info_after_a_zero() {
        let reply = Kind::Reply { info_len: 5 };
        assert_eq!(reply.needed(&[]).unwrap(), 1);
        assert_eq!(reply.needed(&[0]).unwrap(), 6);
        assert_eq!(reply.needed(&[0, 9, 9]).unwrap(), 6);
        assert_eq!(reply.needed(&[1]).unwrap(), 1);
        assert_eq!(
            parse_reply(&[0, 1, 2, 3, 4, 5], 5).unwrap(),
            &[1, 2, 3, 4, 5]
        );
        for bad in [&[1][..], &[0, 1, 2][..], &[][..]] {
            let err = parse_reply(bad, 5).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{bad:?}");
        }
    }

    #[test]
    fn batch_heads_round_trip() {
        let header = BatchHeader::new(77, 3, 1000).unwrap();
        let mut head = [0; MAX_HEAD_LEN];
        let bytes = header.write([0x40, 0x44, 0x48, 0x4c], &mut head).to_vec();
        assert_eq!(bytes.len(), HEADER_LEN + 3 * 8);
        assert_eq!(header.head_len(), bytes.len());
        assert_eq!(&bytes[..4], b"FDPB");
        assert_eq!(BatchHeader::parse(&bytes).unwrap(), Some(header));
        assert_eq!(batch_values(&bytes).collect::<Vec<_>>(), [0x40, 0x44, 0x48]);
        // The length grows as the header is seen, and no further.
        for cut in 0..HEADER_LEN {
            assert_eq!(Kind::BatchHead.needed(&bytes[..cut]).unwrap(), HEADER_LEN);
            assert_eq!(BatchHeader::parse(&bytes[..cut]).unwrap(), None);
        }
        for cut in HEADER_LEN..=bytes.len() {
            assert_eq!(Kind::BatchHead.needed(&bytes[..cut]).unwrap(), bytes.len());
        }

        let empty = BatchHeader::new(1, 0, 0).unwrap();
        let bytes = empty.write([], &mut head).to_vec();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(batch_values(&bytes).count(), 0);

        let full = BatchHeader::new(1, MAX_HANDLES, u32::MAX as usize).unwrap();
        assert_eq!(full.head_len(), MAX_HEAD_LEN);
        let bytes = full.write((0..).map(|i| 4 * i + 4), &mut head).to_vec();
        assert_eq!(BatchHeader::parse(&bytes).unwrap(), Some(full));
        assert_eq!(batch_values(&bytes).last(), Some(4 * MAX_HANDLES as u64));
    }

    #[test]
    fn batch_headers_refuse_what_does_not_fit() {
        let err = BatchHeader::new(1, MAX_HANDLES + 1, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("254"), "{err}");
        #[cfg(target_pointer_width = "64")]
        {
            let err = BatchHeader::new(1, 0, u32::MAX as usize + 1).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn bad_batch_heads_are_rejected_as_soon_as_seen() {
        // A wrong magic, at its first wrong byte.
        for bad in [&b"X"[..], b"FDX", b"FDPC", b"FDPS\0\0\0\0"] {
            let err = Kind::BatchHead.needed(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{bad:?}");
            assert!(err.to_string().contains("send_handles"), "{err}");
        }
        // Too many handles.
        let mut head = [0; MAX_HEAD_LEN];
        BatchHeader::new(1, 1, 0).unwrap().write([4], &mut head);
        head[8..12].copy_from_slice(&(MAX_HANDLES as u32 + 1).to_ne_bytes());
        let err = BatchHeader::parse(&head[..HEADER_LEN]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("254 handles"), "{err}");
        head[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(Kind::BatchHead.needed(&head[..HEADER_LEN]).is_err());
    }

    /// Feeds `stream` to `record` in pieces of at most `piece` bytes, as a
    /// receive would; gives how many bytes it took.
    fn feed(record: &mut impl Fill, stream: &[u8], piece: usize) -> io::Result<usize> {
        let mut at = 0;
        loop {
            let want = record.unfilled()?;
            if want.is_empty() {
                return Ok(at);
            }
            let n = want.len().min(piece).min(stream.len() - at);
            assert!(n > 0, "the record wants more than the stream has");
            want[..n].copy_from_slice(&stream[at..at + n]);
            record.filled(n);
            at += n;
        }
    }

    #[test]
    fn an_incoming_record_takes_its_bytes_and_no_more() {
        let mut head = [0; MAX_HEAD_LEN];
        let header = BatchHeader::new(9, 2, 3).unwrap();
        let mut stream = header.write([0x40, 0x44], &mut head).to_vec();
        stream.extend_from_slice(b"abc");
        // The next record, which must stay in the socket.
        stream.extend_from_slice(&plain(1, 2));
        for piece in [1, 2, 7, 16, 100] {
            let mut incoming = Incoming::<MAX_HEAD_LEN>::new(Kind::BatchHead);
            assert!(!incoming.started());
            let took = feed(&mut incoming, &stream, piece).unwrap();
            assert!(incoming.started());
            assert_eq!(took, header.head_len(), "pieces of {piece}");
            assert_eq!(incoming.bytes(), &stream[..took]);

            let parsed = BatchHeader::parse(incoming.bytes()).unwrap().unwrap();
            let (mut buffer, mut sink) = ([0; 8], [0; 2]);
            let mut data = Data::new(&parsed, &mut buffer, &mut sink);
            assert_eq!(feed(&mut data, &stream[took..], piece).unwrap(), 3);
            assert_eq!((data.kept(), data.truncated()), (3, false));
            assert_eq!(&buffer[..3], b"abc");
        }

        let mut answer = Incoming::<1>::new(Kind::Answer);
        assert_eq!(feed(&mut answer, &[0, 1], 1).unwrap(), 1);
        assert_eq!(answer.array(), &[0]);
        let mut reply = Incoming::<4>::new(Kind::Reply { info_len: 3 });
        assert_eq!(feed(&mut reply, &[1, 0, 0, 0], 4).unwrap(), 1);
        let mut reply = Incoming::<4>::new(Kind::Reply { info_len: 3 });
        assert_eq!(feed(&mut reply, &[0, 7, 8, 9, 5], 2).unwrap(), 4);
        assert_eq!(parse_reply(reply.bytes(), 3).unwrap(), &[7, 8, 9]);
    }

    #[test]
    fn an_incoming_record_rejects_bad_bytes_once_they_come() {
        let mut incoming = Incoming::<MAX_HEAD_LEN>::new(Kind::BatchHead);
        let err = feed(&mut incoming, b"FDPSxxxxxxxxxxxxxxxx", 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        // Rejected once the piece that brought the wrong byte is in.
        assert_eq!(incoming.bytes(), b"FDPSxx");
    }

    #[test]
    fn data_that_does_not_fit_goes_to_the_sink_and_is_reported() {
        let header = BatchHeader::new(1, 0, 10).unwrap();
        let stream: Vec<u8> = (0..10).collect();
        for (room, piece) in [(0, 3), (4, 1), (4, 100), (9, 2)] {
            let (mut buffer, mut sink) = ([0xff; 16], [0; 3]);
            let mut data = Data::new(&header, &mut buffer[..room], &mut sink);
            assert!(data.started());
            assert_eq!(feed(&mut data, &stream, piece).unwrap(), 10);
            assert_eq!((data.kept(), data.truncated()), (room, true));
            assert_eq!(&buffer[..room], &stream[..room]);
            assert_eq!(buffer[room], 0xff, "nothing written past the room");
        }
        let mut empty = Data::new(&BatchHeader::new(1, 0, 0).unwrap(), &mut [], &mut []);
        assert!(empty.unfilled().unwrap().is_empty());
    }

    #[test]
    fn an_outgoing_record_goes_in_pieces_until_done() {
        let (head, data) = (*b"head", *b"and data");
        for piece in [1, 3, 4, 5, 12, 100] {
            let mut outgoing = Outgoing::new([&head[..], &data[..]]);
            assert!(!outgoing.started());
            let mut sent = Vec::new();
            while !outgoing.is_done() {
                let mut n = 0;
                for part in outgoing.rest() {
                    let take = (piece - n).min(part.len());
                    sent.extend_from_slice(&part[..take]);
                    n += take;
                }
                outgoing.sent(n);
                assert!(outgoing.started());
            }
            assert_eq!(sent, b"headand data", "pieces of {piece}");
            assert!(outgoing.rest().is_empty());
        }
        // Empty parts need no send.
        let mut outgoing = Outgoing::new([&[1][..], &[]]);
        outgoing.sent(1);
        assert!(outgoing.is_done());
        assert!(Outgoing::<2>::new([&[], &[]]).is_done());
        let mut nothing_yet = Outgoing::new([&[1][..]]);
        nothing_yet.sent(0);
        assert!(!nothing_yet.started() && !nothing_yet.is_done());
    }

    #[test]
    fn a_closed_peer_says_where_the_record_was_cut() {
        for started in [false, true] {
            let err = closed(started);
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
            assert_eq!(
                err.to_string().contains("middle of a record"),
                started,
                "{err}"
            );
        }
    }
}
