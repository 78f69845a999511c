//! Starting a program with fds laid out by the socket-activation
//! convention: a `fork` and an `exec` with nothing but async-signal-safe
//! calls between them.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::msg::MAX_FDS;
use super::retry;

/// A program to run with fds laid out by the socket-activation convention,
/// every string of it made before any `fork`: `fds` become 3, 4, …, with
/// `LISTEN_FDS`, `LISTEN_PID` (the pid of the process that execs) and
/// `LISTEN_FDNAMES` set, then the variables of `env`; every other variable
/// is this process's, less the convention's own, which are never passed on
/// stale.
///
/// `std::process::Command` cannot do this: `LISTEN_PID` of a forked child
/// is known only after the fork, and a variable cannot be set between fork
/// and exec without allocating. Here the last variable has room for the
/// pid's digits, which the process that execs writes in.
pub(crate) struct Launch {
    program: CString,
    /// The strings the pointers below point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` and room for the digits and a NUL, zeroed; `pid_var`
    /// points at it and is the only way it is reached.
    _pid_room: Vec<u8>,
    pid_var: *mut u8,
    sources: Vec<RawFd>,
    /// The process group to put the program in (`setpgid(0, group)`): 0
    /// for one of its own, `None` to leave it in this process's.
    process_group: Option<libc::pid_t>,
}

/// A string without NUL bytes, or `InvalidInput`.
fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a program, argument or variable holds a NUL byte",
        )
    })
}

/// `KEY=VALUE` as one string.
fn pair(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut pair = key.as_bytes().to_vec();
    pair.push(b'=');
    pair.extend_from_slice(value.as_bytes());
    c_string(pair)
}

impl Launch {
    /// Everything `program` needs to run with `argv` (its name first), the
    /// variables of `env` and `fds` named by `names` (joined by colons).
    pub(crate) fn new(
        program: &Path,
        argv: &[&OsStr],
        env: &[(&OsStr, &OsStr)],
        fds: &[BorrowedFd<'_>],
        names: &str,
    ) -> io::Result<Launch> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_FDS} fds go to a started program"),
            ));
        }
        let program = c_string(program.as_os_str().as_bytes().to_vec())?;
        let args = argv.iter().map(|arg| c_string(arg.as_bytes().to_vec()));
        let mut strings = args.collect::<io::Result<Vec<_>>>()?;
        let argc = strings.len();
        // The convention's variables come from here alone, and so does
        // each of `env`.
        let replaced = |key: &OsStr| {
            crate::activation::VARIABLES.iter().any(|name| key == *name)
                || env.iter().any(|(name, _)| key == *name)
        };
        for (key, value) in std::env::vars_os() {
            if !replaced(&key) {
                strings.push(pair(&key, &value)?);
            }
        }
        strings.push(c_string(format!("LISTEN_FDS={}", fds.len()).into_bytes())?);
        strings.push(c_string(format!("LISTEN_FDNAMES={names}").into_bytes())?);
        for (key, value) in env {
            strings.push(pair(key, value)?);
        }
        // "LISTEN_PID=", then the process that execs writes its pid's
        // digits and a NUL.
        let mut pid_room = vec![0u8; 32];
        pid_room[..11].copy_from_slice(b"LISTEN_PID=");
        let pid_var = pid_room.as_mut_ptr();

        let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
            strings.iter().map(|s| s.as_ptr()).collect()
        };
        let mut argv = pointers(&strings[..argc]);
        argv.push(std::ptr::null());
        let mut env = pointers(&strings[argc..]);
        env.push(pid_var.cast_const().cast());
        env.push(std::ptr::null());
        Ok(Launch {
            program,
            _strings: strings,
            argv,
            env,
            _pid_room: pid_room,
            pid_var,
            sources: fds.iter().map(AsRawFd::as_raw_fd).collect(),
            process_group: None,
        })
    }

    /// Puts the program in the process group `group` before the exec, or
    /// in a group of its own for 0 (`setpgid(2)`).
    pub(crate) fn process_group(&mut self, group: Option<libc::pid_t>) {
        self.process_group = group;
    }

    /// Forks and execs the program, and returns its pid once the exec has
    /// succeeded. Between the fork and the exec the child makes only
    /// async-signal-safe calls and allocates nothing.
    pub(crate) fn spawn(&self) -> io::Result<u32> {
        let (report, reporter) = cloexec_pipe()?;
        let reporter_fd = reporter.as_raw_fd();
        // SAFETY: the child runs only `Launch::run_child`, which makes only
        // async-signal-safe calls on memory prepared here, and never
        // returns.
        let pid = match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            // SAFETY: this is the child of the fork, and every pointer in
            // `self` points into memory the fork copied.
            0 => unsafe { self.run_child(reporter_fd) },
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
        Err(self.failed(io::Error::from_raw_os_error(i32::from_ne_bytes(errno))))
    }

    /// Replaces this process with the program, after marking every fd
    /// above 2 close-on-exec so that it inherits only 0–2 and the fds laid
    /// out. Returns only on failure, by which time fds 3, 4, … hold copies
    /// of the fds given, whatever they held before.
    pub(crate) fn exec(&self) -> io::Error {
        if let Some(group) = self.process_group {
            if let Err(err) = join_group(group) {
                return self.failed(err);
            }
        }
        if let Err(err) = cloexec_from(3) {
            return io::Error::new(
                err.kind(),
                format!("cannot mark this process's fds close-on-exec: {err}"),
            );
        }
        let mut moved = [-1 as RawFd; MAX_FDS];
        // SAFETY: every pointer of `self` is valid for as long as it lives,
        // and the call writes only within `pid_var`'s 32 bytes and `moved`.
        let errno = unsafe { self.lay_out_and_exec(&mut moved) };
        for &fd in moved.iter().filter(|&&fd| fd >= 0) {
            // SAFETY: a copy made by `lay_out_and_exec` and owned by nothing
            // else; it is closed once, here.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.failed(io::Error::from_raw_os_error(errno))
    }

    /// Why the program did not run.
    fn failed(&self, err: io::Error) -> io::Error {
        io::Error::new(
            err.kind(),
            format!("cannot run {}: {err}", self.program.to_string_lossy()),
        )
    }

    /// In the child of [`Launch::spawn`]: lays out the fds and execs; on a
    /// failure writes errno to `reporter` and exits with 127.
    ///
    /// # Safety
    ///
    /// Only in the child of a `fork`, with every pointer valid (the memory
    /// of the parent, copied by the fork), and `reporter` open.
    unsafe fn run_child(&self, reporter: RawFd) -> ! {
        let mut moved = [-1 as RawFd; MAX_FDS];
        // `setpgid` is async-signal-safe and allocates nothing.
        let errno = match self.process_group.map(join_group) {
            Some(Err(err)) => err.raw_os_error().unwrap_or(0),
            // SAFETY: as this function's contract says.
            _ => unsafe { self.lay_out_and_exec(&mut moved) },
        };
        // SAFETY: `reporter` is open in the child; four bytes from a local.
        // Both calls are async-signal-safe.
        unsafe {
            libc::write(reporter, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        }
    }

    /// Writes the pid, lays out the fds, clears the signal mask, restores
    /// `SIGPIPE` and execs. Returns errno of what failed; `moved` keeps the
    /// numbers of the copies it made, each close-on-exec, for the caller to
    /// close. Every call is async-signal-safe and nothing allocates.
    ///
    /// # Safety
    ///
    /// Every pointer of `self` must be valid. Fds 3, 4, … are taken over
    /// whatever they held, which nothing may still use.
    unsafe fn lay_out_and_exec(&self, moved: &mut [RawFd; MAX_FDS]) -> i32 {
        let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let count = self.sources.len() as RawFd;
        // SAFETY: as this function's contract says: `pid_var` has room for
        // 11 more bytes after "LISTEN_PID=", and every call below takes
        // only numbers or pointers into `self` and locals.
        unsafe {
            write_decimal(self.pid_var.add(11), libc::getpid().unsigned_abs());
            // Each fd first above the targets, so that no target is the
            // source of a later move, then onto its place; dup2 leaves the
            // copy without close-on-exec, and the move has it.
            for (i, &fd) in self.sources.iter().enumerate() {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + count);
                if moved[i] < 0 {
                    return errno();
                }
            }
            for (i, &fd) in moved[..self.sources.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return errno();
                }
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const mask, std::ptr::null_mut());
            // As std's Command does: the Rust runtime ignores SIGPIPE, and
            // the ignoring would be inherited.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.env.as_ptr());
        }
        errno()
    }
}

/// Moves this process into the process group `group`, or into a new one
/// of its own for 0 (`setpgid(0, group)`). Async-signal-safe: it
/// allocates nothing, and its error holds only errno.
fn join_group(group: libc::pid_t) -> io::Result<()> {
    // SAFETY: takes two numbers and no pointers.
    if unsafe { libc::setpgid(0, group) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every fd from `first` on close-on-exec in one system call
/// (`close_range(2)` with `CLOSE_RANGE_CLOEXEC`), or one by one where the
/// kernel cannot.
fn cloexec_from(first: RawFd) -> io::Result<()> {
    #[cfg(fdpass_close_range_cloexec)]
    {
        // SAFETY: with CLOSE_RANGE_CLOEXEC the call closes nothing; it only
        // sets the flag of the fds in the range.
        let got = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if got == 0 {
            return Ok(());
        }
    }
    for fd in open_fds()?.into_iter().filter(|&fd| fd >= first) {
        // Not `set_cloexec`: a number that may have been closed since it
        // was listed cannot be borrowed.
        // SAFETY: F_GETFD and F_SETFD take no pointers and change only the
        // flags of whatever `fd` names; an fd closed meanwhile fails
        // harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// The numbers of this process's open fds, from its fd directory, or every
/// number below the open-file limit where there is none.
fn open_fds() -> io::Result<Vec<RawFd>> {
    match std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")) {
        // The directory's own fd is among them, closed by the time it is
        // used.
        Ok(dir) => Ok(dir
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect()),
        Err(_) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(65_536)
                .min(65_536) as RawFd;
            Ok((0..limit).collect())
        }
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

/// Reaps the child `pid` and returns how it ended: waits for it to end if
/// `block`, else `None` while it runs.
pub(crate) fn wait_child(pid: u32, block: bool) -> io::Result<Option<std::process::ExitStatus>> {
    use rustix::process::{waitpid, WaitOptions};
    use std::os::unix::process::ExitStatusExt;
    let options = if block {
        WaitOptions::empty()
    } else {
        WaitOptions::NOHANG
    };
    let pid = child_pid(pid)?;
    let status = retry(|| Ok(waitpid(Some(pid), options)?))?;
    Ok(status.map(|(_, status)| std::process::ExitStatus::from_raw(status.as_raw())))
}

/// Sends `SIGKILL` to the child `pid`.
pub(crate) fn kill_child(pid: u32) -> io::Result<()> {
    use rustix::process::{kill_process, Signal};
    Ok(kill_process(child_pid(pid)?, Signal::KILL)?)
}

fn child_pid(pid: u32) -> io::Result<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is no pid")))
}

/// How the child `pid` ended, if it has: "exited with status N" or "was
/// killed by signal N". Reaps it.
pub(crate) fn exit_status(pid: u32) -> io::Result<Option<String>> {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = wait_child(pid, false)? else {
        return Ok(None);
    };
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    }))
}

/// Kills the child `pid` and waits for it to be gone.
pub(crate) fn kill_and_reap(pid: u32) {
    let _ = kill_child(pid);
    let _ = wait_child(pid, true);
}

/// Sends `SIGKILL` to every process of the group `pid` leads (`kill(-pid,
/// SIGKILL)`), then reaps `pid`, which is this process's child. The group
/// outlives its leader while any of it runs, and its number is not reused
/// meanwhile, so the signal reaches no one else even once the leader is
/// gone.
pub(crate) fn kill_group_and_reap(pid: u32) {
    use rustix::process::{kill_process_group, Signal};
    if let Ok(group) = child_pid(pid) {
        let _ = kill_process_group(group, Signal::KILL);
    }
    let _ = wait_child(pid, true);
}
