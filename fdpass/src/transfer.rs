//! `fdpass send` and `fdpass recv`: fds in `IO::FDPass` messages, to and
//! from a peer of a trusted user.

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::address::SocketName;
use crate::exec;
use crate::fail::{self, Failure, Result};

/// Whether a peer of uid `uid` is trusted: this user, root, or one named.
fn trusted(uid: u32, named: &[u32]) -> bool {
    uid == rustix::process::getuid().as_raw() || uid == 0 || named.contains(&uid)
}

/// `fdpass send`.
pub fn send(
    socket: &SocketName,
    fds: &[i32],
    batch: bool,
    receiver_uids: &[u32],
    timeout: Duration,
    log: impl Fn(std::fmt::Arguments<'_>),
) -> Result<()> {
    let inherited = fds
        .iter()
        .map(|&fd| exec::inherited(fd))
        .collect::<Result<Vec<_>>>()?;
    let fds: Vec<_> = inherited.iter().map(AsFd::as_fd).collect();
    let deadline = Instant::now() + timeout;
    let stream = socket.connect("the receiver", timeout)?;
    let peer = io_fdpass::peer_credentials(&stream)
        .map_err(|err| Failure::os(format_args!("cannot tell who listens at {socket}"), err))?;
    if !trusted(peer.uid, receiver_uids) {
        return Err(Failure::new(
            fail::NO_PERMISSION,
            format!(
                "the receiver at {socket} runs as uid {}, not as this user or root; nothing was sent (--receiver-uid {} trusts it)",
                peer.uid, peer.uid
            ),
        ));
    }
    // Nothing is due back but, from a holder, its greeting.
    io_fdpass::refuse_fds(&stream)
        .map_err(|err| Failure::os(format_args!("cannot set up {socket}"), err))?;
    let lost = |err| Failure::os(format_args!("cannot send to {socket}"), err);
    set_timeout(&stream, deadline).map_err(lost)?;
    if batch {
        io_fdpass::send_with_fds(&stream, &[0], &fds).map_err(lost)?;
    } else {
        for fd in &fds {
            io_fdpass::send(&stream, fd).map_err(lost)?;
        }
    }
    if is_holder(&stream, deadline) {
        return Err(Failure::new(
            fail::USAGE,
            format!(
                "{socket} is an fdpass holder, which keeps fds under names; it closed what was sent. Use `fdpass store {socket} NAME FD`"
            ),
        ));
    }
    log(format_args!(
        "sent {} fd(s){} to {socket}",
        fds.len(),
        if batch { " in one message" } else { "" }
    ));
    Ok(())
}

/// Whether the peer greeted this connection as an fdpass holder does. A
/// holder greets before it reads, so once the peer has read what was sent
/// its greeting is here if it is a holder. How much it has read is known on
/// Linux; elsewhere only a greeting already here is seen.
fn is_holder(stream: &UnixStream, deadline: Instant) -> bool {
    let wait_until = deadline.min(Instant::now() + Duration::from_secs(1));
    while unread_by_peer(stream) > 0 && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut head = [0; 12];
    matches!(
        rustix::net::recv(stream, &mut head, rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT),
        Ok((n, _)) if head[..n] == b"fdpass-hold "[..n] && n == head.len()
    )
}

/// How many bytes sent on `stream` the peer has not read yet.
#[cfg(fdpass_abstract_names)]
fn unread_by_peer(stream: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut unread: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int to `unread`.
    let got = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &raw mut unread) };
    if got == 0 {
        usize::try_from(unread).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(not(fdpass_abstract_names))]
fn unread_by_peer(_stream: &UnixStream) -> usize {
    0
}

/// Sets the stream's read and write timeouts to the time left.
fn set_timeout(stream: &UnixStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

/// `fdpass recv`: receives the fds, then runs the command.
#[allow(clippy::too_many_arguments)]
pub fn recv(
    socket: &SocketName,
    count: usize,
    names: Vec<String>,
    allow_uids: &[u32],
    timeout: Duration,
    command: &[OsString],
    log: impl Fn(std::fmt::Arguments<'_>),
) -> Result<Failure> {
    let names = exec::fd_names(names, count, |_| "unknown")?;
    let program = exec::find(&command[0])?;
    let deadline = Instant::now() + timeout;
    let listening = socket.listen()?;
    log(format_args!("waiting for {count} fd(s) at {socket}"));
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
            Ok(peer) if trusted(peer.uid, allow_uids) => {}
            Ok(peer) => {
                log(format_args!(
                    "turned away a sender of uid {} (--allow-uid {} accepts it)",
                    peer.uid, peer.uid
                ));
                continue;
            }
            Err(err) => {
                log(format_args!(
                    "turned away a sender that cannot be identified: {err}"
                ));
                continue;
            }
        }
        break receive(&stream, count, deadline).map_err(|err| match err.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => gave_up(),
            _ => Failure::os(format_args!("receiving at {socket}"), err),
        })?;
    };
    log(format_args!("received {count} fd(s) at {socket}"));
    drop(listening);
    Ok(exec::exec_with_fds(fds, &names, &program, command, &[]))
}

/// Waits until `fd` is readable, or the deadline; false at the deadline.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, deadline: Instant) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
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
fn receive(stream: &UnixStream, count: usize, deadline: Instant) -> io::Result<Vec<OwnedFd>> {
    let mut fds: Vec<Option<OwnedFd>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut got = 0;
    while got < count {
        set_timeout(stream, deadline)?;
        got += io_fdpass::recv_fds(stream, &mut fds[got..]).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("the sender closed the connection after {got} of {count} fd(s)"),
            ),
            _ => e,
        })?;
    }
    Ok(fds.into_iter().flatten().collect())
}
