//! Starting a program with fds laid out by the socket-activation
//! convention: a `fork` and an `exec` with nothing but async-signal-safe
//! calls between them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::msg::MAX_FDS;
use super::retry;

/// A program to start with fds laid out by the socket-activation
/// convention: `fds` as 3, 4, …, and `LISTEN_FDS`, `LISTEN_PID` (its own
/// pid), `LISTEN_FDNAMES` (`names`) and `NOTIFY_SOCKET` set; the other
/// variables are this process's.
pub(crate) struct Spawn<'a> {
    pub(crate) program: &'a std::path::Path,
    pub(crate) args: &'a [std::ffi::OsString],
    pub(crate) fds: &'a [BorrowedFd<'a>],
    pub(crate) names: &'a str,
    pub(crate) notify_socket: &'a std::ffi::OsStr,
}

impl Spawn<'_> {
    /// Forks and execs the program, and returns its pid once the exec has
    /// succeeded.
    ///
    /// `std::process::Command` cannot do this: `LISTEN_PID` must be the
    /// child's own pid, which is known only after the fork, and a variable
    /// cannot be set between fork and exec without allocating. Here every
    /// string is made before the fork, with room for the pid's digits.
    pub(crate) fn start(&self) -> io::Result<u32> {
        use std::ffi::CString;
        use std::os::unix::ffi::{OsStrExt, OsStringExt};

        let c_string = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a program, argument or variable holds a NUL byte",
                )
            })
        };
        let program = c_string(self.program.as_os_str().as_bytes().to_vec())?;
        let mut argv = vec![program.clone()];
        for arg in self.args {
            argv.push(c_string(arg.as_bytes().to_vec())?);
        }
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            // The convention's variables and NOTIFY_SOCKET come from here.
            let replaced = crate::activation::VARIABLES
                .iter()
                .chain(&["NOTIFY_SOCKET"]);
            if replaced.into_iter().any(|name| key == *name) {
                continue;
            }
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            env.push(c_string(pair)?);
        }
        env.push(c_string(
            format!("LISTEN_FDS={}", self.fds.len()).into_bytes(),
        )?);
        env.push(c_string(
            format!("LISTEN_FDNAMES={}", self.names).into_bytes(),
        )?);
        let mut notify = b"NOTIFY_SOCKET=".to_vec();
        notify.extend_from_slice(self.notify_socket.as_bytes());
        env.push(c_string(notify)?);
        // "LISTEN_PID=", then the child writes its pid's digits and a NUL.
        let mut pid_var = [0u8; 32];
        pid_var[..11].copy_from_slice(b"LISTEN_PID=");
        let pid_var = pid_var.as_mut_ptr();

        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|v| v.as_ptr()).collect();
        env_ptrs.push(pid_var.cast_const().cast());
        env_ptrs.push(std::ptr::null());
        if self.fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_FDS} fds go to a started program"),
            ));
        }
        let sources: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let (report, reporter) = cloexec_pipe()?;
        let child = Child {
            program: program.as_ptr(),
            argv: argv_ptrs.as_ptr(),
            env: env_ptrs.as_ptr(),
            pid_var,
            sources: &sources,
            reporter: reporter.as_raw_fd(),
        };

        // SAFETY: the child runs only `Child::exec`, which makes only
        // async-signal-safe calls on memory prepared here, and never
        // returns.
        let pid = match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            // SAFETY: this is the child of the fork, and every pointer in
            // `child` points into memory the fork copied.
            0 => unsafe { child.exec() },
            pid => pid,
        };
        drop(reporter);
        let mut errno = [0u8; 4];
        let read = retry(|| Ok(rustix::io::read(&report, &mut errno)?))?;
        let pid = u32::try_from(pid).unwrap_or_default();
        if read == 0 {
            return Ok(pid); // the exec closed the close-on-exec pipe
        }
        kill_and_reap(pid);
        let err = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        Err(io::Error::new(
            err.kind(),
            format!("cannot start {}: {err}", self.program.display()),
        ))
    }
}

/// A pipe whose ends are close-on-exec: atomically where the OS has
/// `pipe2`.
#[cfg(not(fdpass_apple))]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Apple systems have no `pipe2`: the ends are marked right after; a
/// `fork` + `exec` in another thread meanwhile may inherit them.
#[cfg(fdpass_apple)]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsFd;
    let (read, write) = rustix::pipe::pipe()?;
    super::set_cloexec(read.as_fd())?;
    super::set_cloexec(write.as_fd())?;
    Ok((read, write))
}

/// What the child of [`Spawn::start`] needs between fork and exec, all
/// made before the fork.
struct Child<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    /// `LISTEN_PID=` and room for the digits and a NUL, zeroed.
    pid_var: *mut u8,
    sources: &'a [RawFd],
    /// The write end of a close-on-exec pipe, for the exec's errno.
    reporter: RawFd,
}

impl Child<'_> {
    /// Lays out the fds, writes the pid, clears the signal mask and execs;
    /// on a failure writes errno to `reporter` and exits with 127.
    ///
    /// # Safety
    ///
    /// Only in the child of a `fork`, with every pointer valid (the memory
    /// of the parent, copied by the fork).
    unsafe fn exec(&self) -> ! {
        // SAFETY: as this function's contract says; every call below is
        // async-signal-safe, and nothing allocates.
        unsafe {
            write_decimal(self.pid_var.add(11), libc::getpid().unsigned_abs());
            let count = self.sources.len() as RawFd;
            // Each fd first above the targets, so that no target is the
            // source of a later move, then onto its place; dup2 leaves the
            // copy without close-on-exec, and the move has it.
            let mut moved = [0 as RawFd; MAX_FDS];
            for (i, &fd) in self.sources.iter().enumerate() {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + count);
                if moved[i] < 0 {
                    self.fail();
                }
            }
            for (i, &fd) in moved[..self.sources.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    self.fail();
                }
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const mask, std::ptr::null_mut());
            // As std's Command does: the Rust runtime ignores SIGPIPE, and
            // the ignoring would be inherited.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(self.program, self.argv, self.env);
            self.fail()
        }
    }

    /// Reports errno to the parent and exits.
    ///
    /// # Safety
    ///
    /// As [`Child::exec`]: only in the child of a `fork`.
    unsafe fn fail(&self) -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY: `reporter` is open in the child; four bytes from a local.
        unsafe {
            libc::write(self.reporter, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        }
    }
}

/// Writes the decimal digits of `n` at `at`, followed by a NUL.
///
/// # Safety
///
/// `at` must be valid for 11 bytes of writes.
unsafe fn write_decimal(at: *mut u8, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        // SAFETY: within the 11 bytes the caller promises.
        unsafe { at.add(i).write(*digit) };
    }
    // SAFETY: as above.
    unsafe { at.add(len).write(0) };
}

/// How the child `pid` ended, if it has: "exited with status N" or "was
/// killed by signal N". Reaps it.
pub(crate) fn exit_status(pid: u32) -> io::Result<Option<String>> {
    use rustix::process::{waitpid, Pid, WaitOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let Some((_, status)) = retry(|| Ok(waitpid(Some(pid), WaitOptions::NOHANG)?))? else {
        return Ok(None);
    };
    Ok(Some(
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".to_owned(),
        },
    ))
}

/// Kills the child `pid` and waits for it to be gone.
pub(crate) fn kill_and_reap(pid: u32) {
    use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = kill_process(pid, Signal::KILL);
    let _ = retry(|| Ok(waitpid(Some(pid), WaitOptions::empty())?));
}
