//! The Unix API as a user sees it: round trips on every socket type, and
//! every way a peer or the system can make a receive fail, each checked for
//! leaked fds.

#![cfg(unix)]

mod util;

use std::io::{ErrorKind, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use io_fdpass::{recv_fd, recv_fds, send_fd, send_fds, FdPassExt, MAX_FDS};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketType};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use util::{all_types, file_with, pair, read_all, NoLeak};

#[test]
fn send_recv_round_trip_on_every_socket_type() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        let file = file_with(name);
        send_fd(&a, &file).unwrap();
        let got = recv_fd(&b).unwrap();
        assert_ne!(got.as_raw_fd(), file.as_raw_fd());
        assert_eq!(read_all(got), name);
    }
    check.assert_unchanged();
}

#[test]
fn received_fds_are_close_on_exec() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let file = file_with("x");
    rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty()).unwrap();
    send_fd(&a, &file).unwrap();
    assert!(util::is_cloexec(recv_fd(&b).unwrap()));

    send_fds(&a, b"two", &[file.as_fd(), file.as_fd()]).unwrap();
    let mut fds = [None, None];
    recv_fds(&b, &mut [0; 3], &mut fds).unwrap();
    assert!(fds
        .iter()
        .all(|fd| fd.as_ref().is_some_and(util::is_cloexec)));
    drop((a, b, file, fds));
    check.assert_unchanged();
}

#[test]
fn wrong_data_byte_is_invalid_data_and_closes_the_fds() {
    let check = NoLeak::start();
    for (_, ty) in all_types() {
        let (a, b) = pair(ty);
        let file = file_with("x");
        send_fds(&a, &[1], &[file.as_fd(), file.as_fd()]).unwrap();
        let err = recv_fd(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("0x01"), "{err}");
        assert!(err.to_string().contains("2 fd(s)"), "{err}");
    }
    check.assert_unchanged();
}

/// An empty `SOCK_SEQPACKET` record reads like the end of the connection;
/// Linux tells them apart by whether the peer has hung up.
#[cfg(fdpass_linux_kernel)]
#[test]
fn an_empty_record_is_not_mistaken_for_the_end() {
    let check = NoLeak::start();
    for hang_up in [rustix::net::Shutdown::Write, rustix::net::Shutdown::Both] {
        let (a, b) = pair(SocketType::SEQPACKET);
        rustix::net::send(&a, &[], SendFlags::empty()).unwrap();
        let err = recv_fd(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("empty message"), "{err}");

        rustix::net::shutdown(&a, hang_up).unwrap();
        for _ in 0..2 {
            let err = recv_fd(&b).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
        }
    }
    check.assert_unchanged();
}

#[test]
fn message_without_fd_is_invalid_data() {
    let check = NoLeak::start();
    for (_, ty) in all_types() {
        let (a, b) = pair(ty);
        send_fds(&a, &[0], &[]).unwrap();
        let err = recv_fd(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("no fd"), "{err}");
    }
    check.assert_unchanged();
}

#[test]
fn surplus_fds_are_closed_and_the_first_returned() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        let first = file_with(name);
        let other = file_with("other");
        let fds = [first.as_fd(), other.as_fd(), other.as_fd(), other.as_fd()];
        send_fds(&a, &[0], &fds).unwrap();
        let got = recv_fd(&b).unwrap();
        check.assert_plus(2 + 2 + 1);
        assert_eq!(read_all(got), name);
    }
    check.assert_unchanged();
}

#[test]
fn the_most_fds_a_message_carries_are_all_closed_when_surplus() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::SEQPACKET);
    let file = file_with("many");
    let fds = vec![file.as_fd(); MAX_FDS];
    send_fds(&a, &[0], &fds).unwrap();
    assert_eq!(read_all(recv_fd(&b).unwrap()), "many");
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn a_datagram_longer_than_one_byte_is_rejected_and_its_fds_closed() {
    let check = NoLeak::start();
    for ty in [SocketType::DGRAM, SocketType::SEQPACKET] {
        let (a, b) = pair(ty);
        let file = file_with("x");
        send_fds(&a, b"\0extra", &[file.as_fd()]).unwrap();
        let err = recv_fd(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("longer"), "{err}");
    }
    check.assert_unchanged();
}

/// Sends fds with no data byte at all, which only a datagram socket allows.
fn send_fds_without_data(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&[])],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
}

#[test]
fn fds_without_a_data_byte_are_closed() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::DGRAM);
    let file = file_with("x");
    send_fds_without_data(a.as_fd(), &[file.as_fd(), file.as_fd()]);
    let err = recv_fd(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("no data byte"), "{err}");

    send_fds(&a, &[], &[]).unwrap();
    let err = recv_fd(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("empty message"), "{err}");
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn a_closed_peer_is_unexpected_eof() {
    let check = NoLeak::start();
    for ty in [SocketType::STREAM, SocketType::SEQPACKET] {
        let (a, b) = pair(ty);
        drop(a);
        let err = recv_fd(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("closed"), "{err}");

        let got = recv_fds(&b, &mut [0; 8], &mut [None, None]).unwrap();
        assert_eq!((got.bytes, got.fds_received), (0, 0));
    }
    let (a, b) = pair(SocketType::STREAM);
    drop(b);
    let err = send_fd(&a, &a).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    drop(a);
    check.assert_unchanged();
}

#[test]
fn non_blocking_receive_would_block_then_works() {
    let check = NoLeak::start();
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    assert_eq!(recv_fd(&b).unwrap_err().kind(), ErrorKind::WouldBlock);
    let err = recv_fds(&b, &mut [0; 4], &mut [None]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    let file = file_with("later");
    a.send_fd(&file).unwrap();
    assert_eq!(read_all(b.recv_fd().unwrap()), "later");
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn non_blocking_send_would_block_and_loses_nothing() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        rustix::io::ioctl_fionbio(&a, true).unwrap();
        let file = file_with(name);
        let mut sent = 0;
        let err = loop {
            match send_fd(&a, &file) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1_000_000, "{name}: the socket never filled");
        };
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{name}: {err}");
        assert!(sent > 0);

        rustix::io::ioctl_fionbio(&b, true).unwrap();
        let mut received = 0;
        loop {
            match recv_fd(&b) {
                Ok(fd) => {
                    assert_eq!(read_all(fd), name);
                    received += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(received, sent, "{name}");
    }
    check.assert_unchanged();
}

/// Linux's `SO_PASSCRED` adds an `SCM_CREDENTIALS` message to every receive.
#[cfg(fdpass_linux_kernel)]
#[test]
fn credentials_beside_the_fd_do_not_hide_it() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        let file = file_with(name);
        send_fd(&a, &file).unwrap();
        assert_eq!(read_all(recv_fd(&b).unwrap()), name);

        send_fds(&a, b"many", &vec![file.as_fd(); MAX_FDS]).unwrap();
        let mut fds = [const { None }; MAX_FDS];
        let got = recv_fds(&b, &mut [0; 4], &mut fds).unwrap();
        assert!(got.is_complete(), "{name}: {got:?}");
        assert!(fds.iter().all(Option::is_some));
    }
    check.assert_unchanged();
}

/// Linux's `SO_PASSPIDFD` (6.5 and later) adds an `SCM_PIDFD` message to
/// every receive, and the kernel opens a pidfd for it in the receiver: the
/// receive must close it, in every call that receives.
#[cfg(fdpass_linux_kernel)]
#[test]
fn pidfds_beside_the_fd_are_closed() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        if !pass_pidfds(&b) {
            return;
        }
        let file = file_with(name);
        // Open now: the pair and the file, and nothing more after each call.
        let held = 3;
        send_fd(&a, &file).unwrap();
        assert_eq!(read_all(recv_fd(&b).unwrap()), name);
        check.assert_plus(held);

        send_fds(&a, b"two", &[file.as_fd(); 2]).unwrap();
        let mut got = [None, None];
        let r = recv_fds(&b, &mut [0; 4], &mut got).unwrap();
        assert!(r.is_complete(), "{name}: {r:?}");
        drop(got);
        check.assert_plus(held);

        assert_eq!(io_fdpass::send_many(&a, &[file.as_fd(); 3]).unwrap(), 3);
        let mut got = [None, None, None];
        let mut many = 0;
        while many < 3 {
            many += io_fdpass::recv_many(&b, &mut got).unwrap().fds_received;
        }
        assert!(got.iter().all(Option::is_some));
        drop(got);
        check.assert_plus(held);
    }
    check.assert_unchanged();
}

#[test]
fn batch_round_trip_with_the_most_fds() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        let files: Vec<_> = (0..MAX_FDS).map(|i| file_with(&i.to_string())).collect();
        let borrowed: Vec<_> = files.iter().map(AsFd::as_fd).collect();
        assert_eq!(
            send_fds(&a, name.as_bytes(), &borrowed).unwrap(),
            name.len()
        );

        let mut data = [0; 32];
        let mut fds = [const { None }; MAX_FDS];
        let got = recv_fds(&b, &mut data, &mut fds).unwrap();
        assert_eq!(&data[..got.bytes], name.as_bytes());
        assert_eq!(got.fds_received, MAX_FDS);
        assert!(got.is_complete());
        for (i, fd) in fds.into_iter().flatten().enumerate() {
            assert_eq!(read_all(fd), i.to_string());
        }
    }
    check.assert_unchanged();
}

#[test]
fn batch_fills_only_the_empty_slots_and_reports_the_rest() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let file = file_with("x");
    let other = file_with("held already");
    send_fds(&a, b"abc", &[file.as_fd(); 5]).unwrap();

    // Three slots, one of them full: room for exactly two.
    let mut fds = [None, Some(OwnedFd::from(other)), None];
    let got = recv_fds(&b, &mut [0; 8], &mut fds).unwrap();
    assert_eq!((got.fds_received, got.fds_discarded), (2, 3));
    assert!(!got.is_complete());
    let [first, held, last] = fds;
    assert_eq!(
        read_all(held.unwrap()),
        "held already",
        "a full slot is kept"
    );
    assert_eq!(read_all(first.unwrap()), "x");
    assert!(last.is_some());
    drop(last);
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn batch_reports_a_truncated_datagram_and_keeps_its_fds() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::DGRAM);
    let file = file_with("kept");
    send_fds(&a, b"longer than four", &[file.as_fd()]).unwrap();
    let mut data = [0; 4];
    let mut fds = [None];
    let got = recv_fds(&b, &mut data, &mut fds).unwrap();
    assert_eq!((got.bytes, &data), (4, b"long"));
    assert!(got.data_truncated && !got.is_complete());
    assert_eq!(read_all(fds[0].take().unwrap()), "kept");
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn batch_refuses_bad_arguments() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let fds = vec![a.as_fd(); MAX_FDS + 1];
    let err = send_fds(&a, b"x", &fds).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("254"), "{err}");

    let err = send_fds(&a, b"", &[a.as_fd()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    rustix::io::ioctl_fionbio(&b, true).unwrap();
    assert_eq!(
        recv_fd(&b).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "nothing was sent"
    );
    drop((a, b));
    check.assert_unchanged();
}

#[test]
fn a_stream_receive_never_merges_two_sends_fds() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let one = file_with("one");
    let two = file_with("two");
    send_fds(&a, b"first", &[one.as_fd()]).unwrap();
    send_fds(&a, b"second", &[two.as_fd()]).unwrap();

    let mut data = [0; 64];
    let mut fds = [None, None, None, None];
    let got = recv_fds(&b, &mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.bytes], b"first");
    assert_eq!(read_all(fds[0].take().unwrap()), "one");
    let got = recv_fds(&b, &mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.bytes], b"second");
    assert_eq!(read_all(fds[0].take().unwrap()), "two");
    drop((a, b, one, two));
    check.assert_unchanged();
}

#[test]
fn a_full_fd_table_is_an_error_that_leaks_nothing() {
    const NAME: &str = "a_full_fd_table_is_an_error_that_leaks_nothing";
    if !util::is_child(NAME) {
        return util::run_in_child(NAME);
    }

    let before = util::fd_count();
    let (a, b) = pair(SocketType::SEQPACKET);
    let file = file_with("x");
    send_fd(&a, &file).unwrap();
    send_fds(&a, &[0], &[file.as_fd(); 3]).unwrap();
    send_fds(&a, b"batch", &[file.as_fd(); 3]).unwrap();

    // Counting needs an fd itself, so count before the table is full and
    // again once room is back.
    let base = util::fd_count();
    let (mut fillers, saved) = fill_fd_table(file.as_fd());
    let err = recv_fd(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    assert!(err.to_string().contains("RLIMIT_NOFILE"), "{err}");

    // One slot free: the first fd arrives, the kernel truncates the rest.
    fillers.pop();
    let err = recv_fd(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    assert!(err.to_string().contains("1 fd(s)"), "{err}");
    // The fd that did arrive was closed: its slot, and only it, is free.
    fillers.push(rustix::io::dup(&file).expect("the slot is free again"));
    assert!(rustix::io::dup(&file).is_err());
    fillers.pop();

    // The batch call reports the truncation and keeps what did arrive.
    let mut fds = [None, None, None];
    let got = recv_fds(&b, &mut [0; 8], &mut fds).unwrap();
    assert!(got.control_truncated && !got.is_complete());
    assert_eq!((got.bytes, got.fds_received), (5, 1));
    drop(fds);

    drop(fillers);
    setrlimit(Resource::Nofile, saved).unwrap();
    assert_eq!(util::fd_count(), base);
    drop((a, b, file));
    assert_eq!(util::fd_count(), before);
}

/// Lowers this process's `RLIMIT_NOFILE` to just above its highest open fd
/// and fills every free slot below the limit with copies of `fd`, so that
/// no new fd has room. Returns the copies and the limit to restore. Run it
/// only in a child test: the limit is the whole process's.
fn fill_fd_table(fd: BorrowedFd<'_>) -> (Vec<OwnedFd>, Rlimit) {
    let saved = getrlimit(Resource::Nofile);
    // The limit sits above the highest open fd, so there is at least one
    // slot to fill even when the open fds have no gaps.
    let highest = (0..4096).rev().find(|&fd| {
        // SAFETY: the fd is only queried, never closed or kept.
        rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
    });
    let limit = highest.unwrap() as u64 + 2;
    set_fd_limit(limit, &saved);
    let mut fillers = Vec::new();
    while let Ok(copy) = rustix::io::dup(fd) {
        fillers.push(copy);
    }
    assert!(!fillers.is_empty(), "no free slot below the limit {limit}");
    (fillers, saved)
}

fn set_fd_limit(current: u64, saved: &Rlimit) {
    let limit = Rlimit {
        current: Some(current),
        maximum: saved.maximum,
    };
    setrlimit(Resource::Nofile, limit).unwrap();
}

/// Linux writes the error (-EMFILE) in place of the pidfd of `SO_PASSPIDFD`
/// when the fd table is full; that is no fd, and closing it as one aborts a
/// debug build ("IO Safety violation").
#[cfg(fdpass_linux_kernel)]
#[test]
fn pidfds_that_found_no_room_are_not_closed() {
    const NAME: &str = "pidfds_that_found_no_room_are_not_closed";
    if !util::is_child(NAME) {
        return util::run_in_child(NAME);
    }
    let (a, b) = pair(SocketType::SEQPACKET);
    if !pass_pidfds(&b) {
        return;
    }
    let file = file_with("x");
    for free in 0..=3 {
        for call in ["recv", "recv_fds", "recv_many"] {
            send_fd(&a, &file).unwrap();
            let base = util::fd_count();
            let (mut fillers, saved) = fill_fd_table(file.as_fd());
            fillers.truncate(fillers.len().saturating_sub(free));
            let got = match call {
                "recv" => recv_fd(&b).map(|fd| usize::from(util::is_cloexec(&fd))),
                "recv_fds" => recv_fds(&b, &mut [0], &mut [None]).map(|got| {
                    assert_eq!(got.control_truncated, free == 0, "{free} free: {got:?}");
                    got.fds_received
                }),
                _ => io_fdpass::recv_many(&b, &mut [None]).map(|got| got.fds_received),
            };
            drop(fillers);
            setrlimit(Resource::Nofile, saved).unwrap();
            // Which of the two the kernel serves first is its own affair:
            // with no slot neither arrives, with one the other finds none.
            match got {
                Ok(fds) => assert_eq!(fds, usize::from(free > 0), "{call}, {free} free"),
                Err(e) => {
                    assert!(free == 0 && call != "recv_fds", "{call}, {free} free: {e}");
                    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{call}: {e}");
                }
            }
            assert_eq!(util::fd_count(), base, "{call}, {free} free");
        }
    }
}

/// Turns on Linux's `SO_PASSPIDFD` (6.5 and later) on `socket`; false, with
/// a note, where the kernel lacks it.
#[cfg(fdpass_linux_kernel)]
fn pass_pidfds(socket: &OwnedFd) -> bool {
    match io_fdpass_test_support::set_pass_pidfd(socket.as_fd(), true) {
        Ok(()) => true,
        Err(err) => {
            assert_eq!(err.raw_os_error(), Some(libc::ENOPROTOOPT), "{err}");
            eprintln!("skipped: this kernel has no SO_PASSPIDFD");
            false
        }
    }
}

/// At an `RLIMIT_NOFILE` of 0 `poll` refuses even one fd (`EINVAL`), so
/// telling an empty record from the end takes another way.
#[cfg(fdpass_linux_kernel)]
#[test]
fn an_empty_record_at_an_fd_limit_of_zero_is_invalid_data() {
    const NAME: &str = "an_empty_record_at_an_fd_limit_of_zero_is_invalid_data";
    if !util::is_child(NAME) {
        return util::run_in_child(NAME);
    }
    let before = util::fd_count();
    let (a, b) = pair(SocketType::SEQPACKET);
    send_fds(&a, &[], &[]).unwrap();
    let saved = getrlimit(Resource::Nofile);
    set_fd_limit(0, &saved);
    let empty = recv_fd(&b).unwrap_err();
    drop(a);
    let end = recv_fd(&b).unwrap_err();
    setrlimit(Resource::Nofile, saved).unwrap();
    assert_eq!(empty.kind(), ErrorKind::InvalidData, "{empty}");
    assert!(empty.to_string().contains("empty message"), "{empty}");
    assert_eq!(end.kind(), ErrorKind::UnexpectedEof, "{end}");
    drop(b);
    assert_eq!(util::fd_count(), before);
}

#[test]
fn send_to_a_closed_peer_does_not_raise_sigpipe() {
    const NAME: &str = "send_to_a_closed_peer_does_not_raise_sigpipe";
    if !util::is_child(NAME) {
        return util::run_in_child(NAME);
    }
    // Rust's runtime ignores SIGPIPE; a C or Perl host program would not.
    // SAFETY: setting a signal's disposition to its default, before any
    // thread of this child could depend on it.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
    for (name, ty) in [
        ("stream", SocketType::STREAM),
        ("seqpacket", SocketType::SEQPACKET),
    ] {
        let (a, b) = pair(ty);
        drop(b);
        let err = send_fd(&a, &a).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{name}: {err}");
        let err = send_fds(&a, b"x", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{name}: {err}");
    }
    // Still alive: the signal was not raised.
}

#[test]
fn a_signal_during_a_blocking_receive_is_retried() {
    const NAME: &str = "a_signal_during_a_blocking_receive_is_retried";
    if !util::is_child(NAME) {
        return util::run_in_child(NAME);
    }
    extern "C" fn on_signal(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction is valid; the handler does nothing and is
    // installed without SA_RESTART so that recvmsg really fails with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &raw const action, std::ptr::null_mut()),
            0
        );
    }
    let (a, b) = pair(SocketType::STREAM);
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        recv_fd(&b).map(read_all)
    });
    let thread = rx.recv().unwrap();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        // SAFETY: the thread is alive until it has received, which it
        // cannot before the fd is sent below.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
    }
    send_fd(&a, file_with("after signals")).unwrap();
    assert_eq!(receiver.join().unwrap().unwrap(), "after signals");
}

#[test]
fn threads_passing_fds_concurrently_lose_and_leak_nothing() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_000;
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::SEQPACKET);
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let files: Vec<_> = (0..THREADS).map(|t| file_with(&t.to_string())).collect();
    let files = std::sync::Arc::new(files);

    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (a, files) = (a.clone(), files.clone());
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    if i % 2 == 0 {
                        send_fd(&*a, &files[t]).unwrap();
                    } else {
                        send_fds(&*a, &[0], &[files[t].as_fd(); 3]).unwrap();
                    }
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut seen = [0usize; THREADS];
                for _ in 0..THREADS * PER_THREAD / 2 {
                    let fd = recv_fd(&*b).unwrap();
                    seen[read_all(fd).parse::<usize>().unwrap()] += 1;
                }
                seen
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let mut total = [0usize; THREADS];
    for r in receivers {
        for (t, n) in r.join().unwrap().into_iter().enumerate() {
            total[t] += n;
        }
    }
    assert_eq!(total, [PER_THREAD; THREADS]);
    drop((a, b, files));
    check.assert_unchanged();
}
