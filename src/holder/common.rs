//! What a holder and its client are on every OS: the clock, the
//! defaults, the check of a fetch's names, and the words for a failed
//! exchange.

use std::io::{self, ErrorKind};
use std::time::Duration;

use super::protocol;

/// The time since the Unix epoch: the clock a [`Holder`](super::Holder) is
/// given its times by, and that its entries' times are written in.
#[must_use]
pub fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long a call waits for the holder by default, for the whole
/// exchange; `fdpass`'s default `--timeout` too.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of an answer read by default.
pub const DEFAULT_MAX_ANSWER: usize = 16 << 20;

/// How many names a holder's server holds at most unless told
/// (`fdpass hold --max-names`'s default).
pub const DEFAULT_MAX_NAMES: usize = 1024;

/// How long a holder's server gives a client for its whole request and
/// answer unless told (`fdpass hold --client-timeout`'s default).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

/// The names of a fetch, checked: 1 to [`protocol::MAX_FETCH`] of them,
/// each by [the rules](crate::notify::check_name).
pub(super) fn checked_names(names: &[&str]) -> io::Result<Vec<String>> {
    if names.is_empty() || names.len() > protocol::MAX_FETCH {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "a fetch asks for 1 to {} names, not {}",
                protocol::MAX_FETCH,
                names.len()
            ),
        ));
    }
    for name in names {
        crate::notify::check_name(name)?;
    }
    Ok(names.iter().map(|&n| n.to_owned()).collect())
}

/// `err` of an exchange with the holder at `socket`, saying what happened.
pub(super) fn explained(err: io::Error, socket: &str) -> io::Error {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => io::Error::new(
            ErrorKind::TimedOut,
            format!("the holder at {socket} did not answer in time"),
        ),
        ErrorKind::UnexpectedEof => io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("the holder at {socket} closed the connection before it answered"),
        ),
        _ => err,
    }
}
