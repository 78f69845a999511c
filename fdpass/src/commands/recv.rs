//! `fdpass recv`: fds from a sender of a trusted user, in `IO::FDPass`
//! messages, handed to a command.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use io_fdpass::{Deadline, PeerTrust};

use crate::cli::RecvArgs;
use crate::exec;
use crate::fail::{self, Failure, Result};
use crate::output::Log;

/// `fdpass recv`: receives the fds, then runs the command.
pub fn run(args: RecvArgs, log: Log) -> Result<()> {
    let RecvArgs {
        socket,
        count,
        names,
        allow_uids,
        timeout,
        command,
        log: _,
    } = args;
    let count = usize::from(count);
    let names = exec::fd_names(names, count, |_| "unknown")?;
    let program = exec::find(&command[0])?;
    let deadline = Deadline::after(timeout);
    let trust = PeerTrust::new().allow_uids(allow_uids.iter().copied());
    let listening = socket.listen()?;
    log.say(format_args!("waiting for {count} fd(s) at {socket}"));
    let gave_up = || {
        Failure::new(
            fail::TIMED_OUT,
            format!("no trusted sender sent {count} fd(s) to {socket} within {timeout:?}; gave up"),
        )
    };
    let fds = loop {
        if !wait_readable(listening.listener.as_fd(), deadline) {
            return Err(gave_up());
        }
        let stream = match listening.listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == ErrorKind::ConnectionAborted => continue,
            Err(err) => return Err(Failure::os(format_args!("cannot accept at {socket}"), err)),
        };
        match io_fdpass::peer_credentials(&stream) {
            Ok(peer) => {
                if let Err(err) = trust.check(&peer) {
                    log.say(format_args!(
                        "turned away a sender: {err} (--allow-uid {} accepts it)",
                        peer.uid
                    ));
                    turn_away(
                        &stream,
                        &format!(
                            "it takes fds only from {trust}, and this sender runs as uid {} (its --allow-uid {} would take them)",
                            peer.uid, peer.uid
                        ),
                        deadline,
                    );
                    continue;
                }
            }
            Err(err) => {
                log.say(format_args!(
                    "turned away a sender that cannot be identified: {err}"
                ));
                turn_away(
                    &stream,
                    &format!("it cannot tell who this sender is ({err})"),
                    deadline,
                );
                continue;
            }
        }
        break receive(&stream, count, deadline).map_err(|err| match err.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => gave_up(),
            _ => Failure::peer(format_args!("receiving at {socket}"), err),
        })?;
    };
    log.say(format_args!("received {count} fd(s) at {socket}"));
    drop(listening);
    Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
}

/// What `fdpass recv` writes to a sender it turns away, before the reason
/// and a newline, for `fdpass send` to say why. A sender it takes is sent
/// nothing: the `IO::FDPass` exchange stays the one that Perl's and
/// Python's peers know, and they ignore a refusal as they ignore any byte
/// no one asked for.
pub const REFUSED: &[u8] = b"fdpass-recv refused: ";

/// Tells a sender why it is turned away, in one short write that does not
/// wait long (by the deadline, and at most a second): a sender that does
/// not read holds the receiver up no longer than that. What cannot be
/// written is not said; the connection is closed either way.
fn turn_away(stream: &UnixStream, reason: &str, deadline: Deadline) {
    let mut line = REFUSED.to_vec();
    line.extend_from_slice(reason.as_bytes());
    line.push(b'\n');
    let soon = deadline.min(Deadline::after(std::time::Duration::from_secs(1)));
    if soon.set_on(stream).is_ok() {
        let _ = io_fdpass::send_fds(stream, &line, &[]);
    }
}

/// Waits until `fd` is readable, or the deadline; false at the deadline.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, deadline: Deadline) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let left = deadline.left();
        if left.is_zero() {
            return false;
        }
        let timeout = Timespec::try_from(left).ok();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            _ => return true,
        }
    }
}

/// Receives `count` fds in `IO::FDPass` messages, each carrying one or
/// more, by the deadline.
fn receive(stream: &UnixStream, count: usize, deadline: Deadline) -> io::Result<Vec<OwnedFd>> {
    let mut fds: Vec<Option<OwnedFd>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut got = 0;
    while got < count {
        deadline.set_on(stream)?;
        got += io_fdpass::recv_batch(stream, &mut fds[got..]).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("the sender closed the connection after {got} of {count} fd(s)"),
            ),
            _ => e,
        })?;
    }
    Ok(fds.into_iter().flatten().collect())
}
