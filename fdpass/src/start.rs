//! fdpass's own start on glibc Linux, in place of Rust's.
//!
//! Every fdpass command is a process of its own, and Rust's start-up
//! before `main` cost each one a sixth of its CPU time: to place the main
//! thread's stack guard it asks glibc for the thread's stack, which reads
//! and parses `/proc/self/maps`, and it maps an alternate signal stack for
//! its stack-overflow message. So the crate has `no_main` there, and the C
//! runtime calls [`main`] below, which does what of Rust's start fdpass
//! relies on: fds 0–2 open (on /dev/null if they were closed), SIGPIPE
//! ignored (a closed stdout is an exit status, not a death by signal, and
//! the commands fdpass execs inherit it as before), a panic's exit status
//! 101, stdout flushed at the end. What it leaves out is the message on a
//! stack overflow, which ends fdpass by SIGSEGV without it. The arguments
//! need nothing: glibc hands them to std before `main` either way.

use std::ffi::{c_char, c_int};
use std::io::Write;

/// The C runtime's `main`.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    standard_fds_open();
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE, set before any
    // thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let status = std::panic::catch_unwind(crate::status).unwrap_or(101);
    let _ = std::io::stdout().flush();
    c_int::from(status)
}

/// Opens /dev/null on each of fds 0–2 that is closed, as Rust's start
/// does, so that no fd fdpass opens takes its place; aborts if it cannot.
fn standard_fds_open() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only reads the flags of whatever fd the number
        // names, and fails with EBADF where none is open.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        // open returns the lowest fd not open, which is this one: those
        // below it are open, or were opened here first.
        // SAFETY: a NUL-terminated path; the fd is left open for good, as
        // the standard fd it stands for.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            std::process::abort();
        }
    }
}
