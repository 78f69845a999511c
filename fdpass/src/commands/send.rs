//! `fdpass send`: fds of this process, in `IO::FDPass` messages, to a
//! receiver of a trusted user.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use io_fdpass::{Deadline, PeerTrust};

use crate::cli::SendArgs;
use crate::exec;
use crate::fail::{self, Failure, Party, Result};
use crate::output::Log;

/// `fdpass send`.
pub fn run(args: &SendArgs, log: Log) -> Result<()> {
    let SendArgs {
        socket,
        fds,
        batch,
        receiver_uids,
        timeout,
        log: _,
    } = args;
    let (batch, timeout) = (*batch, *timeout);
    let inherited = fds
        .iter()
        .map(|&fd| exec::inherited(fd))
        .collect::<Result<Vec<_>>>()?;
    let fds: Vec<_> = inherited.iter().map(AsFd::as_fd).collect();
    let deadline = Deadline::after(timeout);
    let stream = socket.connect("the receiver", timeout)?;
    let peer = io_fdpass::peer_credentials(&stream)
        .map_err(|err| Failure::peer(format_args!("cannot tell who listens at {socket}"), err))?;
    let trust = PeerTrust::new().allow_uids(receiver_uids.iter().copied());
    trust.check(&peer).map_err(|err| {
        Failure::new(
            fail::code(err.kind(), Party::Peer),
            format!(
                "the receiver at {socket} is not trusted: {err}; nothing was sent (--receiver-uid {} trusts it)",
                peer.uid
            ),
        )
    })?;
    // Nothing is due back but, from a holder, its greeting.
    io_fdpass::refuse_fds(&stream)
        .map_err(|err| Failure::os(format_args!("cannot set up {socket}"), err))?;
    let lost = |err| Failure::peer(format_args!("cannot send to {socket}"), err);
    deadline.set_on(&stream).map_err(lost)?;
    if batch {
        io_fdpass::send_fds(&stream, &[0], &fds).map_err(lost)?;
    } else {
        for fd in &fds {
            io_fdpass::send_fd(&stream, fd).map_err(lost)?;
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
    log.say(format_args!(
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
fn is_holder(stream: &UnixStream, deadline: Deadline) -> bool {
    let wait_until = deadline.min(Deadline::after(Duration::from_secs(1)));
    while unread_by_peer(stream) > 0 && !wait_until.passed() {
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
