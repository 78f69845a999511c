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
    let lost = |err: std::io::Error| match answer(&stream) {
        Answer::Refused(why) => refused(socket, &why),
        _ => Failure::peer(format_args!("cannot send to {socket}"), err),
    };
    deadline.set_on(&stream).map_err(lost)?;
    if batch {
        io_fdpass::send_fds(&stream, &[0], &fds).map_err(lost)?;
    } else {
        for fd in &fds {
            io_fdpass::send_fd(&stream, fd).map_err(lost)?;
        }
    }
    wait_until_taken(&stream, deadline);
    match answer(&stream) {
        Answer::Holder => {
            return Err(Failure::new(
                fail::USAGE,
                format!(
                    "{socket} is an fdpass holder, which keeps fds under names; it closed what was sent. Use `fdpass store {socket} NAME FD`"
                ),
            ))
        }
        Answer::Refused(why) => return Err(refused(socket, &why)),
        Answer::Nothing => {}
    }
    log.say(format_args!(
        "sent {} fd(s){} to {socket}",
        fds.len(),
        if batch { " in one message" } else { "" }
    ));
    Ok(())
}

/// What a peer said back, once it had read what was sent.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Nothing: a receiver that took the fds (`fdpass recv`, Perl's
    /// `IO::FDPass`, Python's `socket.recv_fds` say nothing back).
    Nothing,
    /// An fdpass holder's greeting: it closes fds sent without a request.
    Holder,
    /// `fdpass recv` turned this sender away, and why (as the peer wrote
    /// it: not yet escaped).
    Refused(String),
}

/// The most bytes of a refusal read: a reason is a line.
const MOST_SAID: usize = 512;

/// Waits until the peer has read what was sent, or closed the connection,
/// up to `deadline`: then what it says back has been said. A holder greets
/// before it reads, and `fdpass recv` explains a refusal before it closes.
/// How much the peer has read is known on Linux; elsewhere only what is
/// already here is seen.
fn wait_until_taken(stream: &UnixStream, deadline: Deadline) {
    while unread_by_peer(stream) > 0 && !deadline.passed() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the peer has said back so far, without reading it or waiting.
fn answer(stream: &UnixStream) -> Answer {
    let mut head = [0; MOST_SAID];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    let Ok((n, _)) = rustix::net::recv(stream, &mut head, flags) else {
        return Answer::Nothing;
    };
    said(&head[..n.min(MOST_SAID)])
}

/// What `head`, the first bytes a peer sent back, says.
fn said(head: &[u8]) -> Answer {
    if head.starts_with(b"fdpass-hold ") {
        return Answer::Holder;
    }
    match head.strip_prefix(super::recv::REFUSED) {
        Some(rest) => {
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            Answer::Refused(String::from_utf8_lossy(line).into_owned())
        }
        None => Answer::Nothing,
    }
}

/// The failure of a send `fdpass recv` at `socket` turned away, saying
/// why, escaped: the reason is the peer's.
fn refused(socket: &impl std::fmt::Display, why: &str) -> Failure {
    Failure::new(
        fail::NO_PERMISSION,
        format!(
            "the receiver at {socket} refused the fds: {}; nothing was received",
            crate::output::escape(why)
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_peer_says_back() {
        assert_eq!(said(b""), Answer::Nothing);
        assert_eq!(said(b"\0"), Answer::Nothing);
        assert_eq!(said(b"fdpass-hold 1\n"), Answer::Holder);
        assert_eq!(said(b"fdpass-recv refus"), Answer::Nothing);
        let mut refusal = super::super::recv::REFUSED.to_vec();
        refusal.extend_from_slice(b"it takes fds only from root\nmore");
        assert_eq!(
            said(&refusal),
            Answer::Refused("it takes fds only from root".into())
        );
    }

    #[test]
    fn a_refusal_is_escaped_and_not_permitted() {
        let failure = refused(&"/tmp/r.sock", "no\x1b[31m\rway");
        assert_eq!(failure.code, fail::NO_PERMISSION);
        assert_eq!(
            failure.message,
            "the receiver at /tmp/r.sock refused the fds: no\\e[31m\\rway; nothing was received"
        );
    }
}
