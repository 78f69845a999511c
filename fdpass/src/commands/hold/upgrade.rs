//! SIGHUP: the holder executes its binary again, with everything it holds
//! laid out as `LISTEN_FDS`, and lets go of the fds only once the new
//! image has said that it took them all.
//!
//! Before the exec it forks a watcher that keeps a copy of every fd (a
//! fork copies the fd table). The watcher is no child of the next image:
//! the process in between exits at once, so no one has it to reap. The
//! next image gets the write end of a pipe as `fdpass-hold-handover`
//! (`HANDOVER_NAME`) and writes one byte to it once it has adopted every
//! fd and serves; then the watcher exits, touching nothing. If the pipe
//! closes without that byte (the exec failed, or the new binary died at
//! start), or none comes within [`HANDOVER_TIMEOUT`] (then the watcher
//! kills the new image first), the watcher executes the binary this image
//! runs (`/proc/self/exe`: the old file, even once a new one replaced it)
//! with every fd, and the old version carries on under the watcher's pid,
//! which it tells systemd with `MAINPID=`. The event loop waits on none of
//! this: a new binary that hangs stalls nobody.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use io_fdpass::activation::Command;
use io_fdpass::holder::machine::{HANDOVER_NAME, SOCKET_NAME, STATE_NAME};
use io_fdpass::holder::{Holder, Server, System};
use tokio::net::UnixListener;

use super::serve::{server, Keeper};
use super::signals::{self, Asked, Signals};
use super::Settings;
use crate::fail::{self, Failure};

/// How long the new image has to say it has taken over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops accepting (new clients wait in the socket's backlog), lets the
/// clients being served finish, and executes the binary with every fd; a
/// SIGTERM or SIGINT meanwhile ends the holder instead. Returns the
/// server, still serving what it held, and why, only if it refused before
/// the exec.
pub async fn upgrade(
    server_now: Server,
    signals: &mut Signals,
    keeper: &Arc<Keeper>,
    settings: &Settings,
) -> (Server, Failure) {
    keeper.log(format_args!(
        "SIGHUP: upgrading once the clients being served have their answers"
    ));
    // The last signal wins: a stop asked for while the clients finish is a
    // stop, and another SIGHUP asks for what is under way.
    tokio::select! {
        () = server_now.finish() => {}
        signal = stop_asked(signals) => keeper.exit(signal),
    }
    let (listener, holder) = server_now.into_parts();
    let prepared = match prepare(&holder, settings) {
        Ok(prepared) => prepared,
        Err(failure) => return (server(listener, holder, keeper, settings), failure),
    };
    if let Err(err) = signals::set_blocked(true) {
        let failure = Failure::os("cannot block signals for the exec", err);
        return (server(listener, holder, keeper, settings), failure);
    }
    let fds = laid_out(&listener, &holder, keeper);
    let Prepared {
        program,
        previous,
        read,
        write,
    } = prepared;
    if let Err(err) = fork_watcher(read, &write, || execute(&previous, settings, &fds)) {
        let _ = signals::set_blocked(false);
        let failure = Failure::os("cannot start the watcher of the upgrade", err);
        return (server(listener, holder, keeper, settings), failure);
    }
    keeper.record(&holder);
    keeper.log(format_args!(
        "SIGHUP: executing {} again",
        program.display()
    ));
    let mut next = fds;
    next.push((HANDOVER_NAME, write.as_fd()));
    let failure = execute(&program, settings, &next);
    crate::output::message(format_args!(
        "hold: cannot execute itself again: {failure}; the previous binary carries on with every fd"
    ));
    std::process::exit(i32::from(fail::OS))
}

/// The next SIGTERM or SIGINT, by name; SIGHUPs are let pass.
async fn stop_asked(signals: &mut Signals) -> &'static str {
    loop {
        if let Asked::Exit(signal) = signals.next().await {
            return signal;
        }
    }
}

/// What an upgrade needs, made while the holder can still serve on.
struct Prepared {
    /// The binary to execute.
    program: PathBuf,
    /// The binary this image runs, for the watcher.
    previous: PathBuf,
    /// The handover pipe.
    read: OwnedFd,
    write: OwnedFd,
}

/// Checks that the fds can be laid out within the limits, and makes the
/// handover pipe.
fn prepare(holder: &Holder<System>, settings: &Settings) -> Result<Prepared, Failure> {
    let Some(program) = settings.program.clone() else {
        return Err(Failure::new(
            fail::OS,
            "the path of this binary is not known",
        ));
    };
    // The socket, the state, the handover pipe and what is held, at 3, 4,
    // …, and one more for the layout's temporary.
    let count = holder.len() + 3;
    io_fdpass::activation::room_for(count).map_err(|err| {
        Failure::new(
            fail::OS,
            format!("the fds cannot be handed to the next image: {err}"),
        )
    })?;
    let (read, write) =
        handover_pipe().map_err(|err| Failure::os("cannot make the handover pipe", err))?;
    let own = Path::new("/proc/self/exe");
    let previous = if own.exists() {
        own.to_owned()
    } else {
        program.clone()
    };
    Ok(Prepared {
        program,
        previous,
        read,
        write,
    })
}

/// A pipe whose ends are close-on-exec: the next image gets a copy of the
/// write end by the layout.
fn handover_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::io::{fcntl_setfd, FdFlags};
    let (read, write) = rustix::pipe::pipe()?;
    fcntl_setfd(&read, FdFlags::CLOEXEC)?;
    fcntl_setfd(&write, FdFlags::CLOEXEC)?;
    Ok((read, write))
}

/// The socket, the state file and every fd held, by name, in the order
/// of `LISTEN_FDS`.
fn laid_out<'a>(
    listener: &'a UnixListener,
    holder: &'a Holder<System>,
    keeper: &'a Keeper,
) -> Vec<(&'a str, BorrowedFd<'a>)> {
    let mut fds = vec![
        (SOCKET_NAME, listener.as_fd()),
        (STATE_NAME, keeper.state.fd.as_fd()),
    ];
    for entry in holder.entries() {
        if let Some(fd) = holder.fd(&entry.name) {
            fds.push((entry.name.as_str(), fd.as_fd()));
        }
    }
    fds
}

/// Replaces this process with `program` and `fds`, with the arguments it
/// was started with. Returns only on failure.
fn execute(program: &Path, settings: &Settings, fds: &[(&str, BorrowedFd<'_>)]) -> Failure {
    if let Err(err) = crate::exec::close_standard_fds_closed_at_start() {
        return Failure::os("cannot arrange the fds for the exec", err);
    }
    let Some((arg0, args)) = settings.args.split_first() else {
        return Failure::new(fail::OS, "the arguments of this process are not known");
    };
    let mut run = Command::new(program).arg0(arg0).args(args);
    for (name, fd) in fds {
        run = match run.fd(name, fd) {
            Ok(run) => run,
            Err(err) => return Failure::new(fail::OS, err.to_string()),
        };
    }
    Failure::new(fail::CANNOT_EXECUTE, run.exec().to_string())
}

/// Forks the watcher (see the module's docs), and returns once it runs.
/// `take_over` executes the previous binary with every fd.
fn fork_watcher(
    read: OwnedFd,
    write: &OwnedFd,
    take_over: impl FnOnce() -> Failure,
) -> io::Result<()> {
    let image = rustix::process::getpid();
    // SAFETY: the holder runs on one thread (tokio's runtime on the
    // current thread, and no blocking pool), so the children may run any
    // code: no lock can be held by a thread the fork left behind.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: as above, in the process in between, which only forks
        // and exits, running no destructor and no exit handler.
        0 => unsafe {
            match libc::fork() {
                0 => watch(read, write, image, take_over),
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
        },
        between => {
            drop(read);
            let pid = rustix::process::Pid::from_raw(between).expect("a child's pid");
            let status = loop {
                match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
                    Err(rustix::io::Errno::INTR) => {}
                    other => break other?,
                }
            };
            match status {
                Some((_, status)) if status.exit_status() == Some(0) => Ok(()),
                _ => Err(io::Error::other("the process in between could not fork")),
            }
        }
    }
}

/// The watcher: waits for the next image's byte; exits on it, and
/// otherwise takes over.
fn watch(
    read: OwnedFd,
    write: &OwnedFd,
    image: rustix::process::Pid,
    take_over: impl FnOnce() -> Failure,
) -> ! {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // Only the next image may hold the write end, so that its end is the
    // pipe's.
    // SAFETY: the watcher's copy of the write end, closed once, here; the
    // `OwnedFd` of it is never dropped, since this function never returns.
    unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(write)) };
    let timeout = Timespec {
        tv_sec: i64::try_from(HANDOVER_TIMEOUT.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let mut byte = [0u8];
    let taken = loop {
        let mut fds = [PollFd::new(&read, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(0) => {
                // In time for nothing: it will not serve beside the old.
                let _ = rustix::process::kill_process(image, rustix::process::Signal::KILL);
                break false;
            }
            _ => break matches!(rustix::io::read(&read, &mut byte), Ok(1)),
        }
    };
    if taken {
        // SAFETY: exits at once, touching nothing the next image uses.
        unsafe { libc::_exit(0) }
    }
    drop(read);
    let failure = take_over();
    crate::output::message(format_args!(
        "hold: the new image did not take over, and the previous cannot: {failure}"
    ));
    // SAFETY: as above.
    unsafe { libc::_exit(i32::from(fail::OS)) }
}
