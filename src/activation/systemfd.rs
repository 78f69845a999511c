//! The rules of systemfd's Windows protocol, with no I/O: how a program
//! asks the process that started it for its sockets, and how the answer is
//! judged. systemfd, watchexec's `--socket` and the listenfd crate speak
//! it; so do [`ListenFds::take`](super::ListenFds::take) and
//! [`Command`](super::Command) on Windows.
//!
//! The starting side listens on a loopback TCP address, given to the
//! program in `SYSTEMFD_SOCKET_SERVER`, with a random secret in
//! `SYSTEMFD_SOCKET_SECRET` (a UUID's text). The program connects, writes
//! `SECRET|PID` (its own pid, in decimal), shuts down its side for
//! writing, and reads until the connection closes: one `WSAPROTOCOL_INFOW`
//! per socket, nothing between them. A server that refuses the request
//! closes the connection with nothing sent.
//!
//! io-fdpass adds, beside the protocol and ignored by its other speakers:
//! `LISTEN_FDS`, the count of sockets the answer must hold, so that an
//! answer cut short or a refusal is told from an empty set; and
//! `LISTEN_FDNAMES`, their names, as on Unix. Where `LISTEN_FDS` is set,
//! the server is io-fdpass's, and the request ends with a newline rather
//! than with the end of the stream: the connection stays whole while the
//! server asks Windows who is at its other end (Wine leaves half-closed
//! connections out of its table of connections). io-fdpass's server takes
//! both forms; systemfd's takes only the first, and must never be sent
//! another (a request it cannot read ends its server thread). A
//! readiness message of io-fdpass's own, `SECRET|PID|READY=1` and a
//! newline, goes to the `NOTIFY_SOCKET` of [`notify`](crate::notify) on
//! Windows.
//!
//! The parsers here also serve the Unix convention's variables
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`), so that each rule is written once.

use std::fmt;
use std::io::{self, ErrorKind};

/// The variable that gives the server's address.
pub(crate) const SERVER: &str = "SYSTEMFD_SOCKET_SERVER";
/// The variable that gives the secret.
pub(crate) const SECRET: &str = "SYSTEMFD_SOCKET_SECRET";

/// The longest request a server reads: a secret (36), `|`, a pid (at most
/// 10 digits), `|READY=1` and a newline.
pub(crate) const MAX_REQUEST: usize = 64;

/// The most sockets an answer may hold: as many as one record of fds
/// carries on Unix, so that a hostile server cannot have this process
/// read without end.
pub(crate) const MAX_SOCKETS: usize = 253;

/// A random secret, written as a UUID (version 4), which is how listenfd
/// reads it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Secret([u8; 16]);

impl Secret {
    /// A secret made of 16 random bytes, marked as a version 4 UUID.
    pub(crate) fn from_random(mut bytes: [u8; 16]) -> Secret {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Secret(bytes)
    }

    /// Reads a secret as listenfd and systemfd write it: 32 hex digits,
    /// hyphenated 8-4-4-4-12; either case.
    pub(crate) fn parse(text: &str) -> Option<Secret> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return None;
        }
        let digits: String = groups.concat();
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = digits.get(2 * i..2 * i + 2)?;
            if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Secret(bytes))
    }

    /// Whether `other` is this secret, in time that does not depend on
    /// where they first differ.
    pub(crate) fn matches(&self, other: &Secret) -> bool {
        self.0
            .iter()
            .zip(other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never in a log.
        f.write_str("Secret(..)")
    }
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Its sockets: `SECRET|PID`.
    Sockets,
    /// To say that it is ready: `SECRET|PID|READY=1`.
    Ready,
}

/// A client's request, as it is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) secret: Secret,
    pub(crate) pid: u32,
    pub(crate) ask: Ask,
}

impl Request {
    /// The request's bytes, ended by a newline for a server of
    /// io-fdpass's (`line`), or by nothing, the end of the stream saying
    /// where it ends.
    pub(crate) fn text(&self, line: bool) -> String {
        let end = if line { "\n" } else { "" };
        match self.ask {
            Ask::Sockets => format!("{}|{}{end}", self.secret, self.pid),
            Ask::Ready => format!("{}|{}|READY=1{end}", self.secret, self.pid),
        }
    }

    /// Whether `bytes` read so far hold a whole request of the line form.
    pub(crate) fn is_whole_line(bytes: &[u8]) -> bool {
        bytes.ends_with(b"\n")
    }

    /// Reads a request; the error says what is wrong with it, for the
    /// server's record of refusals (the client is told nothing).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Request, String> {
        if bytes.len() > MAX_REQUEST {
            return Err(format!("a request longer than {MAX_REQUEST} bytes"));
        }
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes).map_err(|_| "a request that is not text")?;
        let mut fields = text.split('|');
        let secret = fields.next().and_then(Secret::parse);
        let secret = secret.ok_or("a request without a secret of the right form")?;
        let text_pid = fields.next().ok_or("a request without a pid")?;
        let pid = match text_pid.parse::<u32>() {
            Ok(pid) if !text_pid.starts_with('+') && pid != 0 => pid,
            _ => {
                return Err(format!(
                    "a request with a pid that is not one: {text_pid:?}"
                ))
            }
        };
        let ask = match (fields.next(), fields.next()) {
            (None, _) => Ask::Sockets,
            (Some("READY=1"), None) => Ask::Ready,
            _ => return Err(format!("a request of unknown form: {text:?}")),
        };
        Ok(Request { secret, pid, ask })
    }
}

/// What a server decides on a request that parsed, in the order it
/// checks: the secret, then the pid named against the one expected and
/// against the socket's peer, where Windows can tell it
/// (`GetExtendedTcpTable`, asked last, as it is slow). `Err` says why it
/// is refused.
pub(crate) fn judge(
    request: &Request,
    secret: &Secret,
    expected_pid: u32,
    peer_pid: impl FnOnce() -> Option<u32>,
) -> Result<(), String> {
    if !request.secret.matches(secret) {
        return Err("a request with the wrong secret".to_owned());
    }
    if request.pid != expected_pid {
        return Err(format!(
            "a request for process {}, not for process {expected_pid}",
            request.pid
        ));
    }
    match peer_pid() {
        Some(actual) if actual != request.pid => Err(format!(
            "a request naming process {}, made by process {actual}",
            request.pid
        )),
        _ => Ok(()),
    }
}

/// How many records of `record_len` bytes an answer of `len` bytes holds,
/// checked against the count the client expects (`LISTEN_FDS`, where the
/// starter set it).
pub(crate) fn records(len: usize, record_len: usize, expected: Option<usize>) -> io::Result<usize> {
    let count = len / record_len;
    if !len.is_multiple_of(record_len) {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            format!(
                "the handover's answer was cut short: {len} bytes, not a whole number of \
                 {record_len}-byte socket records"
            ),
        ));
    }
    match expected {
        Some(expected) if count == 0 && expected > 0 => Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "the handover server sent none of the {expected} socket(s): it refused this \
                 process (a wrong {SECRET}, or not the process it started)"
            ),
        )),
        Some(expected) if count != expected => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("the handover server sent {count} socket(s), but LISTEN_FDS says {expected}"),
        )),
        _ => Ok(count),
    }
}

/// Parses a number of the variable `name`.
pub(crate) fn number<T: std::str::FromStr>(name: &str, value: &str) -> io::Result<T> {
    // `FromStr` takes a leading `+`, which no starter writes.
    match value.parse() {
        Ok(n) if !value.starts_with('+') => Ok(n),
        _ => Err(malformed(name, value, "not a number")),
    }
}

/// The error of a variable `name` whose `value` is wrong, and `why`.
pub(crate) fn malformed(name: &str, value: &str, why: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("the environment variable {name} is malformed ({why}): {value:?}"),
    )
}

/// The names in `LISTEN_FDNAMES`, which must be `count`: none when it is
/// unset.
pub(crate) fn names(value: Option<&str>, count: usize) -> io::Result<Vec<String>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    // As systemd reads it, the empty string names no fd at all.
    let names: Vec<String> = match value {
        "" => Vec::new(),
        _ => value.split(':').map(str::to_owned).collect(),
    };
    if names.len() != count {
        return Err(malformed(
            "LISTEN_FDNAMES",
            value,
            &format!("{} names for {count} fds", names.len()),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "59fb60fe-2634-4ec8-aa81-038793888c8e";

    #[test]
    fn a_secret_reads_back_as_written() {
        let secret = Secret::parse(UUID).unwrap();
        assert_eq!(secret.to_string(), UUID);
        assert_eq!(Secret::parse(&UUID.to_uppercase()), Some(secret));
        let made = Secret::from_random([0xff; 16]);
        let text = made.to_string();
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert_eq!(Secret::parse(&text), Some(made));
        assert_eq!(format!("{made:?}"), "Secret(..)");
    }

    #[test]
    fn a_secret_of_another_form_is_none() {
        for bad in [
            "",
            "59fb60fe26344ec8aa81038793888c8e",
            "59fb60fe-2634-4ec8-aa81-038793888c8",
            "59fb60fe-2634-4ec8-aa81-038793888c8eX",
            "59fb60fg-2634-4ec8-aa81-038793888c8e",
            "+9fb60fe-2634-4ec8-aa81-038793888c8e",
            "59fb60fe-2634-4ec8-aa8-1038793888c8e",
        ] {
            assert_eq!(Secret::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_read_back_and_bad_ones_say_why() {
        let secret = Secret::parse(UUID).unwrap();
        for ask in [Ask::Sockets, Ask::Ready] {
            let request = Request {
                secret,
                pid: 4242,
                ask,
            };
            for line in [false, true] {
                let text = request.text(line);
                assert_eq!(Request::parse(text.as_bytes()), Ok(request));
                assert!(text.len() <= MAX_REQUEST);
                assert_eq!(Request::is_whole_line(text.as_bytes()), line);
            }
        }
        assert_eq!(
            Request::parse(format!("{UUID}|42").as_bytes()).unwrap().pid,
            42
        );
        for (bad, why) in [
            (UUID.to_owned(), "without a pid"),
            (format!("{UUID}|"), "not one"),
            (format!("{UUID}|+42"), "not one"),
            (format!("{UUID}|0"), "not one"),
            (format!("{UUID}|-1"), "not one"),
            (format!("{UUID}|42|READY=0"), "unknown form"),
            (format!("{UUID}|42|READY=1|x"), "unknown form"),
            (format!("{UUID}|42\n\n"), "not one"),
            ("nonsense|42".to_owned(), "secret"),
            (format!("{UUID}|{}", "1".repeat(40)), "longer"),
        ] {
            let e = Request::parse(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(Request::parse(b"\xff|1").unwrap_err().contains("not text"));
    }

    #[test]
    fn the_server_checks_secret_then_pid_then_peer() {
        let secret = Secret::parse(UUID).unwrap();
        let other = Secret::from_random([0; 16]);
        let request = Request {
            secret,
            pid: 7,
            ask: Ask::Sockets,
        };
        assert_eq!(judge(&request, &secret, 7, || Some(7)), Ok(()));
        assert_eq!(judge(&request, &secret, 7, || None), Ok(()));
        let wrong = judge(&request, &other, 7, || Some(7)).unwrap_err();
        assert!(wrong.contains("wrong secret"), "{wrong}");
        let not_child = judge(&request, &secret, 8, || Some(7)).unwrap_err();
        assert!(not_child.contains("not for process 8"), "{not_child}");
        let spoofed = judge(&request, &secret, 7, || Some(9)).unwrap_err();
        assert!(spoofed.contains("made by process 9"), "{spoofed}");
    }

    #[test]
    fn an_answer_is_whole_records_of_the_count_expected() {
        assert_eq!(records(0, 628, None).unwrap(), 0);
        assert_eq!(records(1256, 628, None).unwrap(), 2);
        assert_eq!(records(1256, 628, Some(2)).unwrap(), 2);
        assert_eq!(records(0, 628, Some(0)).unwrap(), 0);
        let cut = records(1000, 628, Some(2)).unwrap_err();
        assert_eq!(cut.kind(), ErrorKind::UnexpectedEof, "{cut}");
        let refused = records(0, 628, Some(2)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
        assert!(refused.to_string().contains(SECRET), "{refused}");
        let fewer = records(628, 628, Some(2)).unwrap_err();
        assert_eq!(fewer.kind(), ErrorKind::InvalidData, "{fewer}");
    }

    #[test]
    fn names_must_match_the_count() {
        assert_eq!(names(None, 2).unwrap(), Vec::<String>::new());
        assert_eq!(names(Some("a:b"), 2).unwrap(), ["a", "b"]);
        assert_eq!(names(Some(""), 0).unwrap(), Vec::<String>::new());
        let e = names(Some(""), 1).unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDNAMES"), "{e}");
        assert_eq!(
            names(Some("a"), 2).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        assert!(number::<u32>("X", "+1").is_err());
        assert_eq!(number::<u32>("X", "12").unwrap(), 12);
    }
}
