//! The format of the bytes a generation hands the next through an fd, as
//! pure code: a header, then the bytes.
//!
//! The header is 32 bytes: the magic `IOFDPHO1`, the kind (8 bytes, little
//! endian: [`Kind::State`] or [`Kind::Pending`]), the length of the bytes
//! (8 bytes) and their checksum (8 bytes). A file whose magic or kind is
//! not what the reader expects is foreign; one whose size is not the
//! header's plus the length was cut short or added to; one whose bytes do
//! not match the checksum was damaged. Each is refused as
//! [`ErrorKind::InvalidData`], so that a reader gets the bytes written or
//! an error, never something in between.
//!
//! The checksum finds accidents (a byte lost, changed, moved or added),
//! not forgery: the file comes from the previous generation of the same
//! program, which could write any bytes it liked in the first place.

use std::io::{self, ErrorKind};

/// The first bytes of every handover file.
const MAGIC: [u8; 8] = *b"IOFDPHO1";

/// The size of the header.
pub(crate) const HEADER: usize = 32;

/// The most bytes one handover file holds: 1 GiB.
pub(crate) const MAX_BYTES: u64 = 1 << 30;

/// What a handover file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The application's state ([`Restart::state`](super::Restart::state)).
    State = 1,
    /// The bytes a connection had read and not handled
    /// ([`Restart::connection`](super::Restart::connection)).
    Pending = 2,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::State => "the state handed over",
            Kind::Pending => "a connection's pending bytes",
        }
    }
}

/// The header of a handover file of `kind` holding `bytes`.
pub(crate) fn header(kind: Kind, bytes: &[u8]) -> io::Result<[u8; HEADER]> {
    let length = bytes.len() as u64;
    if length > MAX_BYTES {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is {length} bytes; at most {MAX_BYTES} go to the next generation",
                kind.describe()
            ),
        ));
    }
    let mut header = [0; HEADER];
    header[..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&(kind as u64).to_le_bytes());
    header[16..24].copy_from_slice(&length.to_le_bytes());
    header[24..].copy_from_slice(&checksum(kind, bytes).to_le_bytes());
    Ok(header)
}

/// What a header promises: the length of the bytes and their checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promise {
    kind: Kind,
    pub(crate) length: u64,
    sum: u64,
}

/// Checks the header of a handover file of `size` bytes in all that should
/// hold `kind`: its magic, its kind, and that the size is the header's plus
/// the length it gives.
pub(crate) fn check_header(kind: Kind, header: &[u8], size: u64) -> io::Result<Promise> {
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if header.len() < HEADER {
        return Err(invalid(
            kind,
            &format!("{size} bytes, too short for its header"),
        ));
    }
    if header[..8] != MAGIC {
        return Err(invalid(kind, "not a handover file (wrong magic)"));
    }
    if word(8) != kind as u64 {
        return Err(invalid(
            kind,
            &format!("a handover file of another kind ({})", word(8)),
        ));
    }
    let length = word(16);
    if length > MAX_BYTES {
        return Err(invalid(kind, &format!("a length of {length} bytes")));
    }
    let whole = HEADER as u64 + length;
    if size != whole {
        let how = if size < whole {
            "cut short"
        } else {
            "added to"
        };
        return Err(invalid(
            kind,
            &format!("{how}: {size} bytes where the header promises {whole}"),
        ));
    }
    Ok(Promise {
        kind,
        length,
        sum: word(24),
    })
}

impl Promise {
    /// Checks the bytes that followed the header against it.
    pub(crate) fn check(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 != self.length {
            return Err(invalid(
                self.kind,
                &format!(
                    "cut short: {} bytes where the header promises {}",
                    bytes.len(),
                    self.length
                ),
            ));
        }
        if checksum(self.kind, bytes) != self.sum {
            return Err(invalid(self.kind, "damaged: its checksum does not match"));
        }
        Ok(())
    }
}

fn invalid(kind: Kind, why: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("{} is {why}", kind.describe()),
    )
}

/// A 64-bit checksum of `bytes`, read 8 at a time: each word is mixed in by
/// steps that are one-to-one, so that a change to any one word, or to the
/// length, always changes the sum. One multiplication per 8 bytes.
fn checksum(kind: Kind, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let step = |sum: u64, word: u64| (sum ^ word).wrapping_mul(K).rotate_left(29);
    let mut sum = step(kind as u64, bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        sum = step(sum, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    sum = step(sum, u64::from_le_bytes(tail));
    // A final mix, so that the last word reaches every bit.
    sum ^= sum >> 33;
    sum = sum.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    sum ^ (sum >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: Kind, bytes: &[u8]) -> Vec<u8> {
        let mut file = header(kind, bytes).unwrap().to_vec();
        file.extend_from_slice(bytes);
        file
    }

    fn read(kind: Kind, file: &[u8]) -> io::Result<Vec<u8>> {
        let promise = check_header(kind, &file[..file.len().min(HEADER)], file.len() as u64)?;
        let bytes = &file[HEADER..];
        promise.check(bytes)?;
        Ok(bytes.to_vec())
    }

    #[test]
    fn what_is_written_is_read() {
        for bytes in [
            &b""[..],
            b"x",
            b"12345678",
            b"a longer state, not a multiple of 8",
        ] {
            assert_eq!(read(Kind::State, &file(Kind::State, bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn every_byte_lost_changed_or_added_is_invalid_data() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let whole = file(Kind::State, &bytes);
        for at in 0..whole.len() {
            let mut lost = whole.clone();
            lost.remove(at);
            let e = read(Kind::State, &lost).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "byte {at} lost");
            let mut changed = whole.clone();
            changed[at] ^= 0x01;
            let e = read(Kind::State, &changed).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "byte {at} changed");
        }
        let mut added = whole.clone();
        added.push(0);
        assert_eq!(
            read(Kind::State, &added).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_lost_byte_is_caught_by_the_checksum_alone() {
        // The length in the header is made to agree with the loss: only
        // the checksum can tell.
        let bytes: Vec<u8> = (0..64u8).collect();
        for at in 0..bytes.len() {
            let mut fewer = bytes.clone();
            fewer.remove(at);
            let promise = Promise {
                kind: Kind::State,
                length: fewer.len() as u64,
                sum: checksum(Kind::State, &bytes),
            };
            assert!(promise.check(&fewer).is_err(), "byte {at} lost");
        }
        // Swapped words, and a zero word added to an aligned state.
        let mut swapped = bytes.clone();
        swapped[..16].rotate_left(8);
        assert_ne!(
            checksum(Kind::State, &swapped),
            checksum(Kind::State, &bytes)
        );
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        assert_ne!(
            checksum(Kind::State, &longer),
            checksum(Kind::State, &bytes)
        );
    }

    #[test]
    fn foreign_and_other_kinds_are_invalid_data() {
        let pending = file(Kind::Pending, b"GET / HTTP/1.1\r\n");
        let e = read(Kind::State, &pending).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(e.to_string().contains("another kind"), "{e}");
        let foreign = b"a file of something else entirely, long enough".to_vec();
        let e = read(Kind::State, &foreign).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let e = read(Kind::State, b"IOFD").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(e.to_string().contains("too short"), "{e}");
        // A length beyond the bound is refused before anything is read.
        let mut huge = file(Kind::State, b"");
        huge[16..24].copy_from_slice(&(MAX_BYTES + 1).to_le_bytes());
        let e = check_header(Kind::State, &huge, MAX_BYTES + 1 + HEADER as u64).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }
}
