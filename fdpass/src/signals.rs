//! Waiting for the signals that ask a daemon to stop.

use std::io;
use std::mem::MaybeUninit;

/// SIGTERM, SIGINT and SIGHUP, blocked in every thread so that one thread
/// can take them with `sigwait`.
pub struct Termination(libc::sigset_t);

/// Blocks the termination signals in the calling thread and in every thread
/// it starts afterwards.
pub fn block_termination() -> io::Result<Termination> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset and pthread_sigmask
    // read and change only that set and this thread's mask.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        let set = set.assume_init();
        match libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) {
            0 => Ok(Termination(set)),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

impl Termination {
    /// Waits for one of the signals and returns its number.
    pub fn wait(&self) -> i32 {
        loop {
            let mut signal = 0;
            // SAFETY: the set was initialised by `block_termination`;
            // sigwait writes the signal's number to `signal`.
            if unsafe { libc::sigwait(&raw const self.0, &raw mut signal) } == 0 {
                return signal;
            }
        }
    }
}
