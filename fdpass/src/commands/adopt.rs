//! `fdpass adopt`: copies of a running process's fds, for a command or a
//! holder, taken without the process's help (the library's `process`
//! module).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use io_fdpass::holder::protocol::Lifetime;
use io_fdpass::notify::{Handover, Listener, READY_SOCKET};
use io_fdpass::process::{Process, ProcessFd};
use io_fdpass::{FdKind, SocketAddress, SocketInfo};

use crate::address::{ListenAddr, SocketName, What};
use crate::cli::AdoptArgs;
use crate::exec;
use crate::fail::{self, Failure, Result};
use crate::output::Log;

/// `fdpass adopt`: takes the fds, then hands them to the command (which
/// replaces fdpass) or to the holder. Nothing is taken before every check
/// that can be made without the process has passed.
pub fn run(args: &AdoptArgs, log: Log) -> Result<()> {
    let verbose = log.verbose;
    let names = exec::fd_names(args.names.clone(), args.what.len(), |i| args.what[i].kind())?;
    let program = match args.store {
        Some(_) => {
            distinct(&names)?;
            None
        }
        None => Some(exec::find(&args.command[0])?),
    };
    let log = |what: fmt::Arguments<'_>| {
        if verbose {
            crate::output::message(what);
        }
    };
    let old = Process::open(args.pid).map_err(Failure::process)?;
    let fds = take(&old, &args.what, log)?;

    if let Some(holder) = &args.store {
        let client = crate::client::client(holder, io_fdpass::holder::DEFAULT_TIMEOUT, &[]);
        for (name, fd) in names.iter().zip(&fds) {
            crate::client::store(&client, holder, name, fd.as_fd(), Lifetime::forever())?;
            log(format_args!("stored it as {name} at {holder}"));
        }
        if args.stop_old {
            stop(&old, verbose);
        }
        return Ok(());
    }
    let program = program.unwrap_or_default();
    if !args.stop_old {
        drop(old);
        return Err(exec::exec_with_fds(
            fds,
            &names,
            &program,
            &args.command,
            &[],
        ));
    }

    // The command replaces fdpass, keeping its pid; a process of its own
    // waits for the command to be ready, then stops the old one.
    let notify =
        Listener::new().map_err(|e| Failure::os("cannot wait for the command's READY=1", e))?;
    let command = Process::open(std::process::id()).map_err(Failure::process)?;
    // Under a service manager the command keeps its `NOTIFY_SOCKET`, and
    // the watcher passes its READY=1 on, with MAINPID= the command.
    let manager = Handover::from_env();
    let watch = Watch {
        old,
        command,
        ready_after: args.ready_after,
        verbose,
        manager: manager.clone(),
    };
    match start_watcher()? {
        Side::Watcher => {
            drop(fds);
            watch.run(&notify);
            drop(notify);
            exit_now();
        }
        Side::Command => {
            // The watcher removes the socket once the command is gone.
            let path = notify.keep();
            drop(watch);
            let env: Vec<(&str, &std::ffi::OsStr)> = match manager {
                Some(_) => vec![(READY_SOCKET, path.as_os_str())],
                None => vec![
                    ("NOTIFY_SOCKET", path.as_os_str()),
                    (READY_SOCKET, "".as_ref()),
                ],
            };
            Err(exec::exec_with_fds(
                fds,
                &names,
                &program,
                &args.command,
                &env,
            ))
        }
    }
}

/// Copies the fds `what` names out of `old`. On any error, those copied
/// already are closed.
fn take(old: &Process, what: &[What], log: impl Fn(fmt::Arguments<'_>)) -> Result<Vec<OwnedFd>> {
    let listing = if what.iter().any(|w| matches!(w, What::Listening(_))) {
        old.fds().map_err(Failure::process)?
    } else {
        Vec::new()
    };
    let mut fds = Vec::with_capacity(what.len());
    for what in what {
        let fd = match what {
            What::Fd(fd) => old.copy_fd(*fd).map_err(Failure::process)?,
            What::Listening(addr) => listener(old, &listing, addr)?,
        };
        log(format_args!(
            "took {what} of process {}: {}",
            old.pid(),
            describe(&fd)
        ));
        fds.push(fd);
    }
    Ok(fds)
}

/// What an fd of this process is, for messages.
fn describe(fd: &OwnedFd) -> String {
    FdKind::of(fd).map_or_else(
        |e| format!("an fd that cannot be examined ({e})"),
        |k| k.to_string(),
    )
}

/// The names of fds put in a holder must differ, or one would replace
/// another.
fn distinct(names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(Failure::new(
                fail::USAGE,
                format!(
                    "two fds would be stored as {name}: give each its own --name, in the order of WHAT"
                ),
            ));
        }
    }
    Ok(())
}

/// Copies the socket `old` listens on at `addr`, found in `listing`.
fn listener(old: &Process, listing: &[ProcessFd], addr: &ListenAddr) -> Result<OwnedFd> {
    let pid = old.pid();
    let wanted = addresses(addr)?;
    let matches = |socket: &SocketInfo| {
        let listening = match addr {
            ListenAddr::Tcp { .. } => socket.is_tcp_listener(),
            ListenAddr::Unix(_) => socket.is_unix_listener(),
        };
        listening
            && socket
                .local
                .as_ref()
                .is_some_and(|local| wanted.iter().any(|w| same_address(pid, w, local)))
    };
    let found: Vec<RawFd> = listing
        .iter()
        .filter(|fd| fd.kind.socket().is_some_and(matches))
        .map(|fd| fd.fd)
        .collect();
    if found.is_empty() {
        return Err(Failure::new(
            fail::NO_INPUT,
            format!(
                "process {pid} has no socket listening at {addr}; {} (`fdpass fds {pid}` shows all its fds)",
                listening_at(listing)
            ),
        ));
    }
    // The same socket may be open at several numbers; two sockets at one
    // address (SO_REUSEPORT) share its connections, and taking one of
    // them is not taking over the address.
    let mut by_socket: BTreeMap<(u64, u64), (RawFd, OwnedFd)> = BTreeMap::new();
    for fd in found {
        let copy = old.copy_fd(fd).map_err(Failure::process)?;
        let meta = std::fs::File::from(
            copy.try_clone()
                .map_err(|e| Failure::os("cannot duplicate an fd", e))?,
        )
        .metadata()
        .map_err(|e| Failure::os("cannot examine a socket", e))?;
        by_socket
            .entry((meta.dev(), meta.ino()))
            .or_insert((fd, copy));
    }
    if by_socket.len() > 1 {
        let fds: Vec<String> = by_socket.values().map(|(fd, _)| fd.to_string()).collect();
        return Err(Failure::new(
            fail::USAGE,
            format!(
                "process {pid} has {} sockets listening at {addr} (fds {}), which share its \
                 connections: name each by its fd number",
                fds.len(),
                fds.join(", ")
            ),
        ));
    }
    let (_, (_, fd)) = by_socket.pop_first().expect("one socket was found");
    Ok(fd)
}

/// The addresses `addr` stands for: a host name may have several.
fn addresses(addr: &ListenAddr) -> Result<Vec<SocketAddress>> {
    use std::net::ToSocketAddrs;
    match addr {
        ListenAddr::Tcp { host, port } => (host.as_str(), *port)
            .to_socket_addrs()
            .map(|addrs| addrs.map(SocketAddress::Inet).collect())
            .map_err(|e| Failure::new(fail::USAGE, format!("cannot resolve {addr}: {e}"))),
        ListenAddr::Unix(SocketName::Path(path)) => Ok(vec![SocketAddress::Path(path.clone())]),
        ListenAddr::Unix(SocketName::Abstract(name)) => {
            Ok(vec![SocketAddress::Abstract(name.as_bytes().to_vec())])
        }
    }
}

/// Whether the address `want`, as given here, is `local`, as process `pid`
/// bound it: the same text, or for a path, the same file, the other
/// process's path taken from its root and working directory.
fn same_address(pid: u32, want: &SocketAddress, local: &SocketAddress) -> bool {
    match (want, local) {
        (SocketAddress::Path(want), SocketAddress::Path(theirs)) if want != theirs => {
            let theirs = match theirs.strip_prefix("/") {
                Ok(relative) => Path::new(&format!("/proc/{pid}/root")).join(relative),
                Err(_) => Path::new(&format!("/proc/{pid}/cwd")).join(theirs),
            };
            match (std::fs::metadata(want), std::fs::metadata(theirs)) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            }
        }
        _ => want == local,
    }
}

/// Where a process listens, for the message that says it does not listen
/// where asked.
fn listening_at(listing: &[ProcessFd]) -> String {
    let at: Vec<String> = listing
        .iter()
        .filter_map(|fd| {
            let socket = fd.kind.socket()?;
            let local = socket.local.as_ref()?;
            let scheme = if socket.is_tcp_listener() {
                "tcp"
            } else if socket.is_unix_listener() {
                "unix"
            } else {
                return None;
            };
            Some(format!("{scheme}:{local} (fd {})", fd.fd))
        })
        .collect();
    if at.is_empty() {
        "it listens on no TCP or unix stream socket".into()
    } else {
        format!("it listens at {}", at.join(", "))
    }
}

/// Sends SIGTERM to the old process, saying what came of it.
fn stop(old: &Process, verbose: bool) {
    let pid = old.pid();
    match old.terminate() {
        Ok(()) if verbose => {
            crate::output::message(format_args!("sent SIGTERM to process {pid}"));
        }
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if verbose {
                crate::output::message(format_args!("process {pid} had exited already"));
            }
        }
        Err(e) => {
            crate::output::message(format_args!("cannot stop process {pid}: {e}"));
        }
    }
}

/// What the watcher needs: the two processes and when to call the command
/// ready.
struct Watch {
    old: Process,
    command: Process,
    ready_after: Option<Duration>,
    verbose: bool,
    /// The service manager, told once the command is ready.
    manager: Option<Handover>,
}

impl Watch {
    /// Waits until the command is ready, then stops the old process; or
    /// until the command exits, and leaves the old process alone. Until
    /// the command exits it goes on reading the socket, so that a
    /// command that notifies again (`STATUS=`, `WATCHDOG=1`) is not met
    /// with an error.
    fn run(self, notify: &Listener) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        // A time past what the clock can say is never.
        let mut deadline = self
            .ready_after
            .and_then(|after| Instant::now().checked_add(after));
        let mut stopped = false;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let timeout = left.and_then(|left| Timespec::try_from(left).ok());
            let mut fds = [
                PollFd::new(notify, PollFlags::IN),
                PollFd::new(&self.command, PollFlags::IN),
            ];
            let ready = match poll(&mut fds, timeout.as_ref()) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    crate::output::message(format_args!(
                        "cannot wait for the command to be ready: {e}"
                    ));
                    return;
                }
                Ok(0) => true,
                Ok(_) if !fds[1].revents().is_empty() => false,
                // What has come; fds sent along (FDSTORE=1) are closed
                // unread.
                Ok(_) => notify
                    .wait_ready(Some(Duration::ZERO))
                    .is_ok_and(|ready| ready.is_some()),
            };
            if self.command.has_exited().unwrap_or(true) {
                if !stopped && self.verbose {
                    crate::output::message(format_args!(
                        "the command exited before it was ready; process {} is left alone",
                        self.old.pid()
                    ));
                }
                return;
            }
            if ready && !stopped {
                self.tell_manager();
                stop(&self.old, self.verbose);
                stopped = true;
                deadline = None;
            }
        }
    }
}

impl Watch {
    /// Tells the service manager, if any, that the command is ready and is
    /// the service's main process (it is, where fdpass was: the command
    /// replaced it).
    fn tell_manager(&self) {
        let Some(manager) = &self.manager else { return };
        let pid = self.command.pid();
        match manager.hand_over(pid) {
            Ok(()) if self.verbose => {
                crate::output::message(format_args!(
                    "told the service manager: READY=1, MAINPID={pid}"
                ));
            }
            Ok(()) => {}
            Err(e) => {
                crate::output::message(format_args!(
                    "cannot tell the service manager that the command is ready: {e}"
                ));
            }
        }
    }
}

/// Which of the two processes [`start_watcher`] returned in.
enum Side {
    /// The new process, which is to watch and exit.
    Watcher,
    /// This process, which goes on to become the command.
    Command,
}

/// Starts a process to watch the command: a child that forks the watcher
/// and exits at once, so that the watcher is no child of the command's,
/// which would have to collect it. Returns in both processes.
///
/// Refuses unless this process runs one thread: only then is the child of
/// `fork` a whole copy, free to allocate and take locks as this process
/// would.
fn start_watcher() -> Result<Side> {
    let failed = |e| Failure::os("cannot start a process to wait for the command", e);
    alone().map_err(|e| {
        Failure::new(
            fail::OS,
            format!("cannot start a process to wait for the command: {e}"),
        )
    })?;
    // SAFETY: this process runs one thread, this one (`alone`); no other
    // can start before the fork but by this thread, which starts none. So
    // the child is a whole copy of this process and may go on as it
    // would: allocate, lock, exit.
    match unsafe { libc::fork() } {
        -1 => Err(failed(io::Error::last_os_error())),
        0 => {
            // SAFETY: as above: the child of `fork` runs one thread, the
            // one that forked.
            match unsafe { libc::fork() } {
                0 => Ok(Side::Watcher),
                -1 => {
                    crate::output::message(format_args!(
                        "cannot start a process to wait for the command: {}",
                        io::Error::last_os_error()
                    ));
                    exit_with(1)
                }
                _ => exit_with(0),
            }
        }
        child => {
            let child = rustix::process::Pid::from_raw(child).expect("fork gives a positive pid");
            let status = loop {
                match rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty()) {
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(failed(e.into())),
                    Ok(status) => break status,
                }
            };
            match status.and_then(|(_, status)| status.exit_status()) {
                Some(0) => Ok(Side::Command),
                _ => Err(Failure::new(
                    fail::OS,
                    "cannot start a process to wait for the command",
                )),
            }
        }
    }
}

/// Checks that this process runs no thread but the calling one, by the
/// entries of `/proc/self/task`.
fn alone() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .and_then(|mut entries| entries.try_fold(0usize, |n, entry| entry.map(|_| n + 1)))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot count this process's threads in /proc/self/task: {e}"),
            )
        })?;
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "it runs {threads} threads, and forks only when it runs one"
        )))
    }
}

/// Ends the watcher once it is done.
fn exit_now() -> ! {
    exit_with(0)
}

/// Ends a forked process at once: no buffers it shares with its parent
/// are flushed, no destructors run.
fn exit_with(code: i32) -> ! {
    // SAFETY: `_exit` ends the process and touches no memory of it.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_fork_while_another_thread_runs() {
        // The test harness runs this test on a thread of its own; this one
        // runs beside it until the check is done.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || wait.recv());
        let e = alone().unwrap_err();
        assert!(e.to_string().contains("forks only when it runs one"), "{e}");
        let Err(failure) = start_watcher() else {
            panic!("forked beside another thread");
        };
        assert_eq!(failure.code, fail::OS);
        assert!(failure.message.contains("threads"), "{}", failure.message);
        drop(done);
        let _ = other.join();
    }

    #[test]
    fn stored_names_must_differ() {
        assert!(distinct(&["a".into(), "b".into()]).is_ok());
        let e = distinct(&["tcp".into(), "tcp".into()]).unwrap_err();
        assert_eq!(e.code, fail::USAGE);
    }
}
