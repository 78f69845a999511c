//! What the restart is on every OS: its default timeout, the slice its
//! waits are cut in, the one restart a process may have under way, and
//! the successor it gives.

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long [`Restart::spawn`](super::Restart::spawn) waits for the next
/// generation unless told otherwise: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each wait for `READY=1` lasts before looking whether the next
/// generation has exited, or the restart was given up.
pub(super) const SLICE: Duration = Duration::from_millis(50);

/// Whether a restart is under way in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The next generation, started and ready.
#[derive(Debug)]
pub struct Successor {
    pub(super) pid: u32,
}

impl Successor {
    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The one restart under way in this process: the claim is let go when
/// this is dropped, however the restart ends.
pub(super) struct Running;

impl Running {
    pub(super) fn claim() -> io::Result<Running> {
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                ErrorKind::ResourceBusy,
                "a restart of this process is under way already",
            ));
        }
        Ok(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}
