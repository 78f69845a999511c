//! Starting a program with fds laid out by the socket-activation
//! convention: a child process (a `clone` sharing memory on Linux, a
//! `fork` elsewhere) and an `exec`, with nothing but async-signal-safe
//! calls between them.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
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

    /// Starts the program in a child process and returns its pid once the
    /// exec has succeeded. Between the start and the exec the child makes
    /// only async-signal-safe calls and allocates nothing.
    ///
    /// On Linux the child shares this process's memory until its exec
    /// (`clone` with `CLONE_VM | CLONE_VFORK`, on a stack of its own, as
    /// glibc's `posix_spawn` does), and only the calling thread waits
    /// meanwhile: no page table is copied, and the threads that go on
    /// serving take no copy-on-write fault for it. Elsewhere it is a
    /// `fork`.
    pub(crate) fn spawn(&self) -> io::Result<u32> {
        let (report, reporter) = cloexec_pipe()?;
        let pid = self
            .start_child(reporter.as_raw_fd())
            .map_err(|e| self.failed(e))?;
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

    /// Starts a child that runs [`Launch::run_child`] with `reporter`, and
    /// returns its pid: with `CLONE_VM | CLONE_VFORK`, once it has execed
    /// or exited.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn start_child(&self, reporter: RawFd) -> io::Result<libc::pid_t> {
        /// The child's stack: `run_child` needs a few KiB, and must stay
        /// far below this, since no guard page ends it (an overrun would
        /// write over this process's heap).
        const STACK: usize = 64 * 1024;

        struct Start<'a> {
            launch: &'a Launch,
            reporter: RawFd,
        }

        extern "C" fn child(start: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `start` is the `Start` below, alive while the parent
            // waits for this child's exec or exit.
            let start = unsafe { &*start.cast::<Start<'_>>() };
            // SAFETY: this is the child of the clone; the memory it reads
            // is the parent's, which waits (`CLONE_VFORK`).
            unsafe { start.launch.run_child(start.reporter) }
        }

        let mut stack = vec![0u128; STACK / 16];
        let start = Start {
            launch: self,
            reporter,
        };
        // Signals are blocked across the clone, so that no handler of this
        // process runs on the child's stack in its shared memory before
        // `run_child` has set every handled signal back to its default.
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
        let mut previous = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
        let (all, previous) = (all.as_mut_ptr(), previous.as_mut_ptr());
        // SAFETY: both sets are locals, zeroed (a valid sigset_t), valid
        // for the calls.
        unsafe {
            libc::sigfillset(all);
            libc::pthread_sigmask(libc::SIG_SETMASK, all, previous);
        }
        // SAFETY: the stack is STACK bytes, 16-aligned, and its top is
        // passed (it grows down); `start` outlives the child's use of it,
        // since with CLONE_VFORK the clone returns only once the child has
        // execed or exited.
        let pid = unsafe {
            libc::clone(
                child,
                stack.as_mut_ptr().add(stack.len()).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw const start).cast_mut().cast(),
            )
        };
        let failed = io::Error::last_os_error();
        // SAFETY: `previous` is the mask read above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, previous, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return Err(failed);
        }
        Ok(pid)
    }

    /// Forks a child that runs [`Launch::run_child`] with `reporter`, and
    /// returns its pid.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn start_child(&self, reporter: RawFd) -> io::Result<libc::pid_t> {
        // SAFETY: the child runs only `Launch::run_child`, which makes only
        // async-signal-safe calls on memory prepared here, and never
        // returns.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            // SAFETY: this is the child of the fork, and every pointer in
            // `self` points into memory the fork copied.
            0 => unsafe { self.run_child(reporter) },
            pid => Ok(pid),
        }
    }

    /// Replaces this process with the program, after closing every fd
    /// above 2 that is not one of those laid out, so that it inherits only
    /// 0–2 and the fds laid out, and the layout needs no more room than
    /// they take. Returns only on failure, by which time fds 3, 4, … may
    /// hold copies of the fds given, and this process's other fds above 2
    /// are closed.
    pub(crate) fn exec(&self) -> io::Error {
        if let Err(err) = room_for(self.sources.len()) {
            return self.failed(err);
        }
        if let Some(group) = self.process_group {
            if let Err(err) = join_group(group) {
                return self.failed(err);
            }
        }
        if let Err(err) = cloexec_from(3).and_then(|()| close_all_but(&self.sources)) {
            return io::Error::new(
                err.kind(),
                format!("cannot close this process's other fds: {err}"),
            );
        }
        let mut pending = [-1 as RawFd; MAX_FDS];
        // SAFETY: every pointer of `self` is valid for as long as it lives,
        // the call writes only within `pid_var`'s 32 bytes and `pending`,
        // and no fd above 2 but those laid out is open any more.
        let errno = unsafe { self.lay_out_and_exec(&mut pending) };
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
    /// Only in the child of [`Launch::start_child`], with every pointer
    /// valid (the memory of the parent, shared while it waits or copied by
    /// the fork), and `reporter` open.
    unsafe fn run_child(&self, reporter: RawFd) -> ! {
        // SAFETY: sigaction is async-signal-safe; it reads and writes only
        // locals.
        unsafe { default_handlers() };
        let mut pending = [-1 as RawFd; MAX_FDS];
        // `setpgid` is async-signal-safe and allocates nothing.
        let errno = match self.process_group.map(join_group) {
            Some(Err(err)) => err.raw_os_error().unwrap_or(0),
            // SAFETY: as this function's contract says.
            _ => unsafe { self.lay_out_and_exec(&mut pending) },
        };
        // SAFETY: `reporter` is open in the child; four bytes from a local.
        // Both calls are async-signal-safe.
        unsafe {
            libc::write(reporter, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        }
    }

    /// Writes the pid, lays out the fds, clears the signal mask, restores
    /// `SIGPIPE` and execs. Returns errno of what failed. Every call is
    /// async-signal-safe and nothing allocates; `pending` is its room.
    ///
    /// The fds are moved in place, with no copy of all of them first: each
    /// onto its target 3 + i as soon as no move still to come reads the fd
    /// there, and a source above the targets that is close-on-exec (which
    /// the exec would drop anyway) is closed after its last move. Where
    /// every move still to come waits on another (a cycle among fds already
    /// in 3, 4, …), one is copied to a temporary, the one fd it takes
    /// beyond the targets. So the layout fits where fds 0 to 3 + N are
    /// below the open-file limit.
    ///
    /// # Safety
    ///
    /// Every pointer of `self` must be valid. Fds 3, 4, … are taken over
    /// whatever they held, which nothing may still use, and each source
    /// above them that is close-on-exec is closed.
    unsafe fn lay_out_and_exec(&self, pending: &mut [RawFd; MAX_FDS]) -> i32 {
        // SAFETY: as this function's contract says: `pid_var` has room for
        // 11 more bytes after "LISTEN_PID=", and every call below takes
        // only numbers or pointers into `self` and locals.
        unsafe {
            write_decimal(self.pid_var.add(11), libc::getpid().unsigned_abs());
            if let Err(errno) = lay_out(&self.sources, pending) {
                return errno;
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const mask, std::ptr::null_mut());
            // As std's Command does: the Rust runtime ignores SIGPIPE, and
            // the ignoring would be inherited.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.env.as_ptr());
        }
        last_errno()
    }
}

/// Sets every signal that this process handles back to its default
/// action; those ignored stay ignored, as an exec leaves them. Until then
/// a signal to the child could run one of this process's handlers, which
/// in a child that shares its memory would act on this process's state.
///
/// # Safety
///
/// Only in a child before its exec, where this process's handlers must
/// not run. Async-signal-safe; allocates nothing.
unsafe fn default_handlers() {
    // Signals are numbered below 65 on most of Linux, below 129 on MIPS
    // and FreeBSD; a number with no signal fails harmlessly. glibc refuses
    // to change its two internal signals (32 and 33) this way, and its
    // handlers for them act only on signals this process sent itself.
    for signal in 1..129 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction reads and writes only the local structs.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &raw mut action) == 0
                && action.sa_sigaction != libc::SIG_IGN
                && action.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &raw const default, std::ptr::null_mut());
            }
        }
    }
}

/// errno of the call that just failed.
fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Moves `sources[i]` onto fd 3 + i for each i, in place (see
/// [`Launch::lay_out_and_exec`]); `pending` keeps the source of each move
/// still to come, -1 once done. Every fd laid out is left without
/// close-on-exec. Returns errno of what failed.
///
/// # Safety
///
/// As [`Launch::lay_out_and_exec`]'s; async-signal-safe, allocates
/// nothing.
unsafe fn lay_out(sources: &[RawFd], pending: &mut [RawFd; MAX_FDS]) -> Result<(), i32> {
    let n = sources.len();
    let target = |i: usize| 3 + i as RawFd;
    // The move whose target `fd` is, if it is one.
    let move_to = |fd: RawFd| usize::try_from(fd - 3).ok().filter(|&i| i < n);
    pending[..n].copy_from_slice(sources);
    // How many moves still to come read each target, other than its own.
    let mut readers = [0u16; MAX_FDS];
    for (i, &fd) in sources.iter().enumerate() {
        match move_to(fd) {
            // Already in place: only close-on-exec is to be cleared.
            Some(j) if j == i => {
                // SAFETY: F_SETFD takes no pointer.
                if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                    return Err(last_errno());
                }
                pending[i] = -1;
            }
            Some(j) => readers[j] += 1,
            None => {}
        }
    }
    loop {
        let mut left = false;
        let mut moved = false;
        for i in 0..n {
            if pending[i] < 0 {
                continue;
            }
            left = true;
            if readers[i] > 0 {
                continue;
            }
            let fd = pending[i];
            // dup2 leaves the copy without close-on-exec.
            // SAFETY: dup2 takes only numbers; nothing still to come reads
            // the target.
            if unsafe { libc::dup2(fd, target(i)) } < 0 {
                return Err(last_errno());
            }
            pending[i] = -1;
            moved = true;
            match move_to(fd) {
                Some(j) => readers[j] -= 1,
                // SAFETY: as `close_if_done` says.
                None => unsafe { close_if_done(fd, &pending[..n]) },
            }
        }
        if !left {
            return Ok(());
        }
        if !moved {
            // Every move still to come waits on another: a cycle. The
            // first one's target goes to a temporary, which the moves
            // that read it read instead.
            let i = pending[..n].iter().position(|&fd| fd >= 0).unwrap_or(0);
            // SAFETY: F_DUPFD_CLOEXEC takes only numbers.
            let temporary = unsafe { libc::fcntl(target(i), libc::F_DUPFD_CLOEXEC, 3) };
            if temporary < 0 {
                return Err(last_errno());
            }
            for fd in pending[..n].iter_mut().filter(|fd| **fd == target(i)) {
                *fd = temporary;
            }
            readers[i] = 0;
        }
    }
}

/// Closes `fd`, a source of the layout that is no target, once no move
/// still to come reads it, if it is close-on-exec: the exec would drop it
/// anyway, and closing it makes room.
///
/// # Safety
///
/// `fd` is one of the layout's sources, which nothing else uses any more.
unsafe fn close_if_done(fd: RawFd, pending: &[RawFd]) {
    if fd < 3 || pending.contains(&fd) {
        return;
    }
    // SAFETY: F_GETFD and close take only numbers; by the contract the fd
    // is no one else's to use.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
            libc::close(fd);
        }
    }
}

/// Closes every fd above 2 but `keep`: those the exec would drop anyway,
/// whose room the layout may need. `close_range(2)` over the gaps where
/// Linux has it, else one by one from the list of open fds.
fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    keep.dedup();
    #[cfg(fdpass_close_range_cloexec)]
    {
        let mut first: libc::c_uint = 3;
        let mut closed = true;
        for last in keep
            .iter()
            .filter(|&&fd| fd >= 3)
            .map(|&fd| fd.unsigned_abs())
            .chain([libc::c_uint::MAX])
        {
            if last > first {
                // SAFETY: closes only numbers outside `keep`, which the
                // caller gives up: every one of them is close-on-exec.
                let got = unsafe {
                    libc::syscall(libc::SYS_close_range, first, last - 1, 0 as libc::c_uint)
                };
                closed &= got == 0;
            }
            first = last.saturating_add(1);
        }
        if closed {
            return Ok(());
        }
    }
    for fd in open_fds()?.into_iter().filter(|&fd| fd >= 3) {
        if keep.binary_search(&fd).is_err() {
            // SAFETY: as above; a number closed meanwhile (the listing's
            // own) fails harmlessly.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
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

/// Whether `count` fds can be laid out at 3, 4, … in place: at most
/// `MAX_FDS`, and within the open-file limit with 0–2 and one temporary
/// beside them. `InvalidInput` otherwise.
pub(crate) fn room_for(count: usize) -> io::Result<()> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let needed = u64::try_from(count).unwrap_or(u64::MAX).saturating_add(4);
    if count <= MAX_FDS && limit.is_none_or(|limit| needed <= limit) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{count} fds cannot be laid out: at most {MAX_FDS} go to a program, and the open-file limit is {}",
            limit.map_or_else(|| "none".to_owned(), |limit| limit.to_string())
        ),
    ))
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
