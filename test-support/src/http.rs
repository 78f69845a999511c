//! Requests to the HTTP servers that the restart tests restart: one GET
//! tried once, its failure classified and counted, and the one wait that
//! may retry, the wait for a server to start answering.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one request may wait to connect, to send and to read before it
/// counts as timed out. Generous: a restart must not make a client wait,
/// but a machine busy with other builds may.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`wait_until_answers`] waits for a server to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no good answer, by the kind of failure a restart can
/// cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The connection was refused: nothing listened.
    Refused,
    /// The connection was reset or aborted before the whole answer came.
    Reset,
    /// Connecting, sending or reading took longer than [`REQUEST_TIMEOUT`].
    TimedOut,
    /// The server closed the connection without a byte of answer (or,
    /// from a holder, before the end of its answer).
    Empty,
    /// An answer that is not a `200` (or not a holder's answer).
    Bad,
    /// Any other error.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Refused => "refused",
            FailureKind::Reset => "reset",
            FailureKind::TimedOut => "timed out",
            FailureKind::Empty => "empty",
            FailureKind::Bad => "bad answer",
            FailureKind::Other => "other error",
        })
    }
}

/// A request that failed: its kind and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind, by which failures are counted.
    pub kind: FailureKind,
    /// The step that failed and the error, or the bad answer.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl Failure {
    /// The failure of `step` with `e`, classified by its kind: also for
    /// the requests of other protocols (a holder's), counted in the same
    /// [`Tally`].
    #[must_use]
    pub fn io(step: &str, e: &std::io::Error) -> Failure {
        let kind = match e.kind() {
            ErrorKind::ConnectionRefused => FailureKind::Refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                FailureKind::Reset
            }
            // A read timeout is EAGAIN on Unix.
            ErrorKind::TimedOut | ErrorKind::WouldBlock => FailureKind::TimedOut,
            ErrorKind::UnexpectedEof => FailureKind::Empty,
            ErrorKind::InvalidData => FailureKind::Bad,
            _ => FailureKind::Other,
        };
        Failure {
            kind,
            detail: format!("{step}: {e}"),
        }
    }
}

/// One HTTP/1.0 GET of `/` at `addr`, with one attempt at each step: the
/// whole answer, which is a `200`, or why there was none.
///
/// # Errors
///
/// The [`Failure`], classified: a refused connection, a reset, a step that
/// timed out, an empty answer or one that is not a `200`.
pub fn get(addr: SocketAddr) -> Result<String, Failure> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)
        .map_err(|e| Failure::io("connect", &e))?;
    let timeouts = stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)));
    timeouts.map_err(|e| Failure::io("set the timeouts", &e))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| Failure::io("send", &e))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| Failure::io("read", &e))?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if answer.is_empty() {
        return Err(Failure {
            kind: FailureKind::Empty,
            detail: "closed without an answer".into(),
        });
    }
    let status = answer.split(' ').nth(1);
    if !answer.starts_with("HTTP/1.") || status != Some("200") {
        return Err(Failure {
            kind: FailureKind::Bad,
            detail: format!("{answer:?}"),
        });
    }
    Ok(answer)
}

/// One [`get`] of a server that names in its answer the pid that served
/// it (`served by pid N`, as `examples/restart.rs` and the other restart
/// examples answer): that pid.
///
/// # Errors
///
/// The [`Failure`] of the request, or [`FailureKind::Bad`] for an answer
/// without a pid.
pub fn get_pid(addr: SocketAddr) -> Result<u32, Failure> {
    let reply = get(addr)?;
    reply
        .rsplit_once("served by pid ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .ok_or_else(|| Failure {
            kind: FailureKind::Bad,
            detail: format!("a reply without a pid: {reply:?}"),
        })
}

/// Waits for a server at `addr` that is starting: retries [`get`] while the
/// connection is refused (not listening yet) or reset (seen rarely, under
/// load, from a server that has just started), for up to
/// [`START_TIMEOUT`]. The first answer, which must be a `200`.
///
/// This is the one request that may be retried: once a server has
/// answered, every request is one [`get`], and each failure counts.
#[must_use]
pub fn wait_until_answers(addr: SocketAddr) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match get(addr) {
            Ok(answer) => return answer,
            Err(e)
                if matches!(e.kind, FailureKind::Refused | FailureKind::Reset)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the server at {addr} never answered: {e}"),
        }
    }
}

/// Connects to a server at `addr` that is starting, retrying while the
/// connection is refused, for up to [`START_TIMEOUT`]: the same one wait
/// as [`wait_until_answers`], for a server that speaks something else.
#[must_use]
pub fn wait_until_connects(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT) {
            Ok(stream) => return stream,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the server at {addr} never took a connection: {e}"),
        }
    }
}

/// What a client under load has seen: how many answers, and every failure
/// counted by its kind, with the first of each kind.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests answered with a `200`.
    pub answered: usize,
    failed: BTreeMap<FailureKind, (usize, String)>,
}

impl Tally {
    /// Counts the outcome of one request.
    pub fn count<T>(&mut self, outcome: &Result<T, Failure>) {
        match outcome {
            Ok(_) => self.answered += 1,
            Err(e) => self.fail(e),
        }
    }

    /// Counts one failed request.
    pub fn fail(&mut self, failure: &Failure) {
        self.failed
            .entry(failure.kind)
            .or_insert_with(|| (0, failure.detail.clone()))
            .0 += 1;
    }

    /// How many requests failed, of every kind.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.failed.values().map(|(n, _)| n).sum()
    }

    /// How many requests failed with `kind`.
    #[must_use]
    pub fn failed_with(&self, kind: FailureKind) -> usize {
        self.failed.get(&kind).map_or(0, |(n, _)| *n)
    }

    /// Asserts that no request failed, showing the counts by kind
    /// otherwise.
    #[track_caller]
    pub fn assert_none_failed(&self) {
        assert!(self.failed.is_empty(), "requests failed: {self}");
    }
}

impl fmt::Display for Tally {
    /// "N answered, M failed (K refused, first: …; …)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} answered, {} failed", self.answered, self.failed())?;
        let mut sep = " (";
        for (kind, (n, first)) in &self.failed {
            write!(f, "{sep}{n} {kind}, the first: {first}")?;
            sep = "; ";
        }
        if !self.failed.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}
