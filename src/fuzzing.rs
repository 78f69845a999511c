//! The pure rules of the crate, for the fuzz targets under `fuzz/`: built
//! only under `cfg(fuzzing)`, which cargo-fuzz sets, hidden from the docs,
//! and no part of the API. Thin doors, each to one rule; the rules stay
//! where they are.
//!
//! A new rule to fuzz gets its door here and a target in
//! `fuzz/`: a `[[bin]]` in `fuzz/Cargo.toml`,
//! its source in `fuzz/fuzz_targets/`, a few seeds in `fuzz/seeds/`.
//! `.ci/robust` runs every target the manifest lists.

use std::io;

#[cfg(unix)]
pub use crate::wire::{end, judge, judge_all, Verdict};
pub use crate::Received;

/// The holder's reading of requests and the client's of answers, which
/// are not public.
#[cfg(unix)]
pub mod holder {
    pub use crate::holder::codec::{
        escape, parse_answer, unescape, Progress, RequestReader, GREETING,
    };
}

/// The Windows records (they are pure code, and fuzz on any OS).
pub mod record {
    pub use crate::record::*;
}

/// A [`Received`] with every field given, as a receive would fill it.
#[must_use]
pub fn received(
    bytes: usize,
    fds: usize,
    fds_discarded: usize,
    data_truncated: bool,
    control_truncated: bool,
) -> Received {
    Received {
        bytes,
        fds_received: fds,
        fds_discarded,
        data_truncated,
        control_truncated,
    }
}

/// What the socket-activation variables say (`activation`'s `layout`):
/// where the fds start, how many there are, and their names.
///
/// # Errors
///
/// As `ListenFds::take` for malformed variables.
#[cfg(unix)]
pub fn layout(
    var: impl Fn(&str) -> Option<String>,
    pid: u32,
    pidfd_id: Option<u64>,
) -> io::Result<Option<(i32, usize, Vec<String>)>> {
    let layout = crate::activation::layout(var, pid, || pidfd_id)?;
    Ok(layout.map(|l| (l.first, l.count, l.names)))
}

/// The variables `layout` reads.
#[cfg(unix)]
pub const VARIABLES: [&str; 5] = crate::activation::VARIABLES;

/// The text `notify::ready` (`None`), `store_fds` (`Some((name, true))`)
/// or `remove_fds` (`Some((name, false))`) sends.
///
/// # Errors
///
/// As those calls, for a name systemd would refuse.
#[cfg(unix)]
pub fn notify_text(message: Option<(&str, bool)>) -> io::Result<String> {
    use crate::notify::Message;
    match message {
        None => Message::Ready,
        Some((name, true)) => Message::Store(name),
        Some((name, false)) => Message::Remove(name),
    }
    .text()
}

/// A notify datagram's assignments, as the crate reads them.
#[cfg(unix)]
#[must_use]
pub fn notify_assignments(datagram: &[u8]) -> Vec<(&[u8], &[u8])> {
    crate::notify::assignments(datagram).collect()
}

/// Whether a notify datagram says `READY=1`, as `notify::Listener` reads
/// it.
#[cfg(unix)]
#[must_use]
pub fn says_ready(datagram: &[u8]) -> bool {
    crate::notify::says_ready(datagram)
}
