//! The holder's signals: SIGTERM and SIGINT end it, SIGHUP upgrades it;
//! blocked around its exec, so that none is lost between two images.

use std::io;
use std::mem::MaybeUninit;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks of the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM or SIGINT: exit, by this name.
    Exit(&'static str),
    /// SIGHUP: execute the binary again, with everything held.
    Upgrade,
}

/// The holder's signal handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers, then unblocks the signals: any that a
    /// previous image blocked for its exec, and that came since, are
    /// delivered now, to the handlers.
    pub fn install() -> io::Result<Signals> {
        let signals = Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        };
        set_blocked(false)?;
        Ok(signals)
    }

    /// The next signal.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Exit("SIGTERM"),
            _ = self.int.recv() => Asked::Exit("SIGINT"),
            _ = self.hup.recv() => Asked::Upgrade,
        }
    }
}

/// Blocks (or unblocks) SIGTERM, SIGINT and SIGHUP in this thread, the
/// only one. Blocked signals stay pending across an exec, to be delivered
/// once the next image has its handlers and unblocks them.
pub fn set_blocked(blocked: bool) -> io::Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: sigemptyset initialises the set; sigaddset and
    // pthread_sigmask read and change only that set and this thread's
    // mask.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        let set = set.assume_init();
        match libc::pthread_sigmask(how, &raw const set, std::ptr::null_mut()) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}
