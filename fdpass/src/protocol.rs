//! What a holder and its clients say to each other.
//!
//! One request per connection. The client sends one line, `VERB ARGS...\n`
//! (`store NAME` with the fd attached, `fetch NAME...`, `list`,
//! `drop NAME`), with the library's `send_with_fds`. The holder answers with
//! `ok\n` followed by the verb's text (`list`: one name per line), the
//! fetched fds attached to the first byte; or with `error CODE MESSAGE\n`,
//! CODE being the exit status the client should end with. Then it closes
//! the connection.

use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::fail::{self, Failure, Result};

/// The longest request line, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most names one `fetch` may ask for: the fds of one message.
pub const MAX_FETCH: usize = io_fdpass::MAX_FDS;
/// The longest name (systemd's limit for fd names).
pub const MAX_NAME: usize = 255;

/// Checks a name for an fd: what `LISTEN_FDNAMES` can carry (no `:`), and
/// a word of the protocol (no space or control character).
pub fn parse_name(name: &str) -> std::result::Result<String, String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name has 1 to {MAX_NAME} characters"));
    }
    if let Some(bad) = name.chars().find(|&c| !c.is_ascii_graphic() || c == ':') {
        return Err(format!(
            "{bad:?} cannot be part of a name: use letters, digits and punctuation other than ':'"
        ));
    }
    Ok(name.to_owned())
}

/// A request, as the holder understands it.
#[derive(Debug, PartialEq)]
pub enum Request {
    Store(String),
    Fetch(Vec<String>),
    List,
    Drop(String),
}

impl Request {
    /// The request line.
    pub fn line(&self) -> String {
        match self {
            Request::Store(name) => format!("store {name}\n"),
            Request::Fetch(names) => format!("fetch {}\n", names.join(" ")),
            Request::List => "list\n".into(),
            Request::Drop(name) => format!("drop {name}\n"),
        }
    }

    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> std::result::Result<Request, String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        if !matches!(verb, "store" | "fetch" | "list" | "drop") {
            return Err(format!("unknown request {verb:?}"));
        }
        let names = match rest {
            "" => Vec::new(),
            _ => rest
                .split(' ')
                .map(parse_name)
                .collect::<std::result::Result<Vec<_>, _>>()?,
        };
        let one = |names: Vec<String>| match <[String; 1]>::try_from(names) {
            Ok([name]) => Ok(name),
            Err(_) => Err(format!("{verb} takes exactly one name")),
        };
        match verb {
            "store" => one(names).map(Request::Store),
            "drop" => one(names).map(Request::Drop),
            "list" if names.is_empty() => Ok(Request::List),
            "list" => Err("list takes no names".into()),
            _ if names.is_empty() => Err("fetch takes at least one name".into()),
            _ if names.len() > MAX_FETCH => Err(format!("fetch takes at most {MAX_FETCH} names")),
            _ => Ok(Request::Fetch(names)),
        }
    }
}

/// Sends `bytes` with `fds` attached to the first of them, then the rest.
pub fn send_all(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let sent = io_fdpass::send_with_fds(stream, bytes, fds)?;
    io::Write::write_all(&mut &*stream, &bytes[sent..])
}

/// Makes `request` of the holder at the other end of `stream`, attaching
/// `fd`, and returns the text of its answer and the `want_fds` fds that
/// came with it.
pub fn ask(
    stream: &UnixStream,
    request: &Request,
    fd: Option<BorrowedFd<'_>>,
    want_fds: usize,
) -> Result<(String, Vec<OwnedFd>)> {
    let lost = |err| Failure::os("the holder did not answer", err);
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    send_all(stream, request.line().as_bytes(), &fds).map_err(lost)?;

    let mut answer = vec![0; 64 * 1024];
    let mut received: Vec<Option<OwnedFd>> =
        std::iter::repeat_with(|| None).take(want_fds).collect();
    let got = io_fdpass::recv_with_fds(stream, &mut answer, &mut received).map_err(lost)?;
    answer.truncate(got.bytes);
    (&*stream).read_to_end(&mut answer).map_err(lost)?;
    let answer = String::from_utf8(answer)
        .map_err(|_| Failure::new(fail::DATA, "the holder's answer is not text"))?;

    let (status, text) = answer.split_once('\n').unwrap_or((&answer, ""));
    if let Some(error) = status.strip_prefix("error ") {
        let (code, message) = error.split_once(' ').unwrap_or(("", error));
        let code = code.parse().unwrap_or(fail::DATA);
        return Err(Failure::new(code, format!("the holder refused: {message}")));
    }
    if status != "ok" {
        return Err(Failure::new(
            fail::DATA,
            format!("the peer at the socket is not an fdpass holder (it said {status:?})"),
        ));
    }
    if got.fds_discarded > 0 || got.control_truncated || got.fds != want_fds {
        return Err(Failure::new(
            fail::DATA,
            format!(
                "the holder sent {} fd(s), not the {want_fds} asked for; all were closed",
                got.fds + got.fds_discarded
            ),
        ));
    }
    Ok((text.to_owned(), received.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Store("web".into()),
            Request::Fetch(vec!["a".into(), "b-2".into()]),
            Request::List,
            Request::Drop("x.y".into()),
        ] {
            let line = request.line();
            assert_eq!(Request::parse(line.trim_end()), Ok(request));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        for line in [
            "",
            "store",
            "store a b",
            "list a",
            "fetch",
            "frob a",
            "store a:b",
            "drop  a",
        ] {
            assert!(Request::parse(line).is_err(), "{line:?}");
        }
        let too_many = format!("fetch{}", " a".repeat(MAX_FETCH + 1));
        assert!(Request::parse(&too_many).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(parse_name("web-1.socket_A").is_ok());
        for bad in ["", "a:b", "a b", "tab\t", "é", &"x".repeat(MAX_NAME + 1)] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }
}
