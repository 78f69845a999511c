//! The holder protocol's internals, no part of the API: reading a request
//! as it arrives, reading an answer, escaping a field. Pure code, with no
//! I/O; `fuzzing` opens it to the fuzz targets.

// Reading requests is the server's, which needs the `tokio` feature;
// without it only the client's half is used.
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::fmt::Write as _;
use std::io::{self, ErrorKind};
#[cfg(unix)]
use std::os::fd::OwnedFd;

use super::protocol::{truncated, Refusal, RefusalKind};
#[cfg(unix)]
use super::protocol::{Request, MAX_REQUEST};

/// What the holder sends a client it serves, before reading its request.
pub const GREETING: &str = "fdpass-hold 1\n";

/// What a client sends after the answer to `reserve`, once the fds are
/// where they go: the take is done.
pub const COMMIT: &str = "commit\n";

/// Reads a client's `commit` as its bytes arrive: `None` while the line
/// has not ended (and is short enough to be `commit`), then whether it
/// is `commit`.
#[must_use]
pub fn commit_received(line: &[u8]) -> Option<bool> {
    match line.iter().position(|&b| b == b'\n') {
        Some(end) => Some(line[..=end] == *COMMIT.as_bytes()),
        None if line.len() < COMMIT.len() => None,
        None => Some(false),
    }
}

/// What the holder said first, or in answer to a request: `Ok` with the
/// text that follows `ok\n` (or the greeting), or its refusal.
///
/// # Errors
///
/// [`ErrorKind::InvalidData`] for anything that is neither `head` nor a
/// refusal this version knows, and the holder's [`Refusal`] as an error of
/// its kind.
pub fn parse_answer<'a>(answer: &'a str, head: &str) -> io::Result<&'a str> {
    if let Some(body) = answer.strip_prefix(head) {
        return Ok(body);
    }
    let line = answer.split('\n').next().unwrap_or_default();
    if let Some(refusal) = line.strip_prefix("error ") {
        let (word, message) = refusal.split_once(' ').unwrap_or((refusal, ""));
        if let Some(kind) = RefusalKind::ALL.into_iter().find(|k| k.word() == word) {
            return Err(Refusal::new(kind, message).into_error());
        }
    }
    Err(io::Error::new(
        ErrorKind::InvalidData,
        format!(
            "the peer is not an fdpass holder, or one of another version: it said {:?}",
            truncated(line)
        ),
    ))
}

#[cfg(unix)]
/// Reads a request as its bytes and fds arrive, from a client that may
/// send anything: at most [`MAX_REQUEST`] bytes are kept, and at most one
/// fd.
#[derive(Debug, Default)]
pub struct RequestReader {
    line: Vec<u8>,
    fd: Option<OwnedFd>,
    surplus_fds: bool,
    cut_off: bool,
}

#[cfg(unix)]
/// What a [`RequestReader`] has made of what it was given so far.
#[derive(Debug)]
pub enum Progress {
    /// The line has not ended yet.
    More,
    /// A whole request, with the fd that came with it.
    Done(Request, Option<OwnedFd>),
    /// The request is refused; every fd that came with it is closed.
    Refused(Refusal),
}

#[cfg(unix)]
impl RequestReader {
    /// A reader with nothing read yet.
    #[must_use]
    pub fn new() -> RequestReader {
        RequestReader::default()
    }

    /// How many more bytes may come before the request is too long.
    #[must_use]
    pub fn room(&self) -> usize {
        MAX_REQUEST - self.line.len()
    }

    /// Takes the next `bytes` from the client, with the fds that came with
    /// them. `fds_discarded` says that more fds came than were kept, and
    /// `fds_cut_off` that the kernel could not deliver some (the
    /// `MSG_CTRUNC` of a process at its open-file limit); the kernel has
    /// closed those. Bytes after the line's end are ignored: the client
    /// waits for the answer.
    pub fn received(
        &mut self,
        bytes: &[u8],
        fds: impl IntoIterator<Item = OwnedFd>,
        fds_discarded: bool,
        fds_cut_off: bool,
    ) -> Progress {
        for fd in fds {
            if self.fd.is_none() && !self.surplus_fds {
                self.fd = Some(fd);
            } else {
                self.surplus_fds = true;
            }
        }
        self.surplus_fds |= fds_discarded;
        self.cut_off |= fds_cut_off;
        if self.line.is_empty() && bytes.first() == Some(&0) {
            self.fd = None;
            return Progress::Refused(Refusal::invalid(
                "this is an fdpass holder, which keeps fds under names: use `fdpass store SOCKET NAME FD` (or io_fdpass::holder::Client) to give it one",
            ));
        }
        let end = bytes.iter().position(|&b| b == b'\n');
        let take = end.unwrap_or(bytes.len()).min(self.room());
        self.line.extend_from_slice(&bytes[..take]);
        if end.is_none_or(|end| end > take) {
            return if self.room() == 0 {
                self.fd = None;
                Progress::Refused(Refusal::invalid(format!(
                    "a request is one line of at most {MAX_REQUEST} bytes"
                )))
            } else {
                Progress::More
            };
        }
        let fd = self.fd.take();
        if self.cut_off && !self.surplus_fds {
            return Progress::Refused(Refusal::new(
                RefusalKind::Full,
                "the holder is at its open-file limit (RLIMIT_NOFILE): the fd sent could not be received",
            ));
        }
        if self.surplus_fds {
            return Progress::Refused(Refusal::invalid(
                "a request carries at most one fd; all that came were closed",
            ));
        }
        let Ok(line) = std::str::from_utf8(&self.line) else {
            return Progress::Refused(Refusal::invalid("the request is not text"));
        };
        match Request::parse(line) {
            Err(refusal) => Progress::Refused(refusal),
            Ok(Request::Store { .. }) if fd.is_none() => {
                Progress::Refused(Refusal::invalid("store came without an fd"))
            }
            Ok(request @ Request::Store { .. }) => Progress::Done(request, fd),
            Ok(_) if fd.is_some() => Progress::Refused(Refusal::invalid(
                "only store comes with an fd; the one that came was closed",
            )),
            Ok(request) => Progress::Done(request, None),
        }
    }
}

/// Escapes a field's value so that it is one word of printable ASCII:
/// `%`, space and every byte outside `!`..=`~` become `%XX`.
#[must_use]
pub fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            escaped.push(char::from(b));
        } else {
            let _ = write!(escaped, "%{b:02X}");
        }
    }
    escaped
}

/// Undoes [`escape`].
///
/// # Errors
///
/// [`ErrorKind::InvalidData`] for a `%` not followed by two hex digits, or
/// bytes that are not UTF-8.
pub fn unescape(value: &str) -> io::Result<String> {
    let bad = || {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("{:?} is not an escaped field", truncated(value)),
        )
    };
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_answer("ok\nweb\n", "ok\n").unwrap(), "web\n");
        let refusal = Refusal::new(RefusalKind::NotFound, "it holds no fd named web");
        let e = parse_answer(&refusal.line(), "ok\n").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("no fd named web"), "{e}");
        for other in ["", "ok", "error 0 done\n", "error\n", "HTTP/1.1 200 OK\r\n"] {
            let e = parse_answer(other, "ok\n").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{other:?}");
        }
    }

    fn feed(reader: &mut RequestReader, bytes: &[u8], fds: Vec<OwnedFd>) -> Progress {
        reader.received(bytes, fds, false, false)
    }

    fn an_fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn a_request_may_come_in_pieces() {
        let mut reader = RequestReader::new();
        assert!(matches!(
            feed(&mut reader, b"sto", vec![an_fd()]),
            Progress::More
        ));
        assert!(matches!(feed(&mut reader, b"re w", vec![]), Progress::More));
        match feed(&mut reader, b"eb\n", vec![]) {
            Progress::Done(Request::Store { name, .. }, Some(_)) => assert_eq!(name, "web"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn readers_refuse_what_is_not_a_request() {
        let refused = |bytes: &[u8], fds: usize| {
            let fds = (0..fds).map(|_| an_fd()).collect();
            match feed(&mut RequestReader::new(), bytes, fds) {
                Progress::Refused(refusal) => refusal.message,
                other => panic!("{bytes:?}: {other:?}"),
            }
        };
        assert!(refused(b"\0", 1).contains("fdpass store"));
        assert!(refused(b"store a\n", 2).contains("at most one fd"));
        assert!(refused(b"store a\n", 0).contains("without an fd"));
        assert!(refused(b"list\n", 1).contains("only store"));
        assert!(refused(b"\xff\n", 0).contains("not text"));
        assert!(refused(&vec![b'a'; MAX_REQUEST], 0).contains("at most"));
        let mut reader = RequestReader::new();
        assert!(matches!(
            reader.received(b"store a", [an_fd()], true, false),
            Progress::More
        ));
        assert!(matches!(
            feed(&mut reader, b"\n", vec![]),
            Progress::Refused(_)
        ));
        let mut reader = RequestReader::new();
        match reader.received(b"store a\n", [], false, true) {
            Progress::Refused(refusal) => assert_eq!(refusal.kind, RefusalKind::Full),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_commit_commits() {
        assert_eq!(commit_received(b"commit\n"), Some(true));
        assert_eq!(commit_received(b"comm"), None);
        assert_eq!(commit_received(b""), None);
        for other in [
            &b"commit \n"[..],
            b"commitx",
            b"abort\n",
            b"\n",
            b"commit\r\n",
        ] {
            assert_eq!(commit_received(other), Some(false), "{other:?}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for value in ["", "plain", "a b", "100%", "é\n\t", "=%20"] {
            let escaped = escape(value);
            assert!(escaped.bytes().all(|b| b.is_ascii_graphic()), "{escaped}");
            assert_eq!(unescape(&escaped).unwrap(), value);
        }
    }
}
