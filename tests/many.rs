//! Bursts: `send_many` and `recv_many`, on every socket type, with bad messages
//! at every position, non-blocking sockets and a closed peer.

#![cfg(unix)]

mod util;

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use io_fdpass::{recv_fd, recv_many, send_fd, send_fds, send_many, MAX_BURST};
use rustix::net::SocketType;
use util::{all_types, file_with, pair, read_all, NoLeak};

/// `n` fds naming files "0".."9" in turn, so that order can be checked.
fn numbered(files: &[File], n: usize) -> Vec<std::os::fd::BorrowedFd<'_>> {
    (0..n).map(|i| files[i % files.len()].as_fd()).collect()
}

fn ten_files() -> Vec<File> {
    (0..10).map(|i| file_with(&i.to_string())).collect()
}

/// Receives until `n` fds have come, checking they name 0..9 in turn.
fn receive_in_order(socket: &OwnedFd, n: usize) {
    let mut fds = [const { None }; MAX_BURST];
    let mut next = 0;
    while next < n {
        let got = recv_many(socket, &mut fds).unwrap();
        assert_eq!(got.rejected, 0, "{:?}", got.first_rejection);
        let before = next;
        for fd in fds.iter_mut().filter_map(Option::take) {
            assert_eq!(read_all(fd), (next % 10).to_string());
            next += 1;
        }
        assert_eq!(
            got.fds_received,
            next - before,
            "the fds fill the first slots"
        );
    }
}

#[test]
fn a_thousand_fds_go_through_in_order_on_every_socket_type() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        let files = ten_files();
        let fds = numbered(&files, 1000);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut sent = 0;
                while sent < fds.len() {
                    sent += send_many(&a, &fds[sent..]).unwrap();
                }
            });
            receive_in_order(&b, 1000);
        });
        drop(fds);
        drop((a, b, files));
        let _ = name;
    }
    check.assert_unchanged();
}

#[test]
fn bursts_mix_with_single_messages() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let files = ten_files();
    assert_eq!(send_many(&a, &numbered(&files, 3)).unwrap(), 3);
    for i in 0..3 {
        assert_eq!(read_all(recv_fd(&b).unwrap()), i.to_string());
    }
    for file in &files[..5] {
        send_fd(&a, file).unwrap();
    }
    receive_in_order(&b, 5);
    drop((a, b, files));
    check.assert_unchanged();
}

#[test]
fn a_bad_message_at_the_start_middle_or_end_loses_nothing_around_it() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        for bad_at in [0, 5, 9] {
            let (a, b) = pair(ty);
            let files = ten_files();
            for (i, file) in files.iter().enumerate() {
                if i == bad_at {
                    send_fds(&a, &[7], &[file.as_fd(), file.as_fd()]).unwrap();
                } else {
                    send_fd(&a, file).unwrap();
                }
            }
            let mut fds = [const { None }; MAX_BURST];
            let got = recv_many(&b, &mut fds).unwrap();
            assert_eq!(
                (got.fds_received, got.rejected),
                (9, 1),
                "{name}, bad at {bad_at}"
            );
            let why = got.first_rejection.unwrap();
            assert_eq!(why.kind(), ErrorKind::InvalidData);
            assert!(why.to_string().contains("0x07"), "{why}");
            let texts: Vec<_> = fds.into_iter().flatten().map(read_all).collect();
            let expected: Vec<_> = (0..10)
                .filter(|&i| i != bad_at)
                .map(|i| i.to_string())
                .collect();
            assert_eq!(texts, expected, "{name}, bad at {bad_at}");
            drop((a, b, files));
            check.assert_unchanged();
        }
    }
}

#[test]
fn surplus_and_missing_fds_in_a_burst_are_handled_per_message() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::SEQPACKET);
    let file = file_with("x");
    send_fds(&a, &[0], &[file.as_fd(); 3]).unwrap(); // surplus: kept, 2 closed
    send_fds(&a, &[0], &[]).unwrap(); // no fd: rejected
    send_fds(&a, &[0], &[file.as_fd(); 40]).unwrap(); // more than a burst holds
    send_fd(&a, &file).unwrap();
    let mut fds = [const { None }; MAX_BURST];
    let got = recv_many(&b, &mut fds).unwrap();
    assert_eq!(got.fds_received, 2);
    assert_eq!(got.rejected, 2);
    assert_eq!(got.fds_discarded, 2);
    assert!(got.first_rejection.unwrap().to_string().contains("no fd"));
    drop((a, b, file, fds));
    check.assert_unchanged();
}

#[test]
fn non_blocking_bursts_are_partial_and_lose_nothing() {
    let check = NoLeak::start();
    for (name, ty) in all_types() {
        let (a, b) = pair(ty);
        rustix::io::ioctl_fionbio(&a, true).unwrap();
        rustix::io::ioctl_fionbio(&b, true).unwrap();
        let err = recv_many(&b, &mut [None, None, None, None]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);

        let files = ten_files();
        let fds = numbered(&files, 100_000);
        let sent = send_many(&a, &fds).unwrap();
        assert!(0 < sent && sent < fds.len(), "{name}: sent {sent}");
        let err = send_many(&a, &fds[sent..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{name}");

        // Fewer than are waiting, then the rest.
        let mut some = [None, None, None];
        assert_eq!(recv_many(&b, &mut some).unwrap().fds_received, 3);
        assert!(some.iter().all(Option::is_some));
        let mut received = 3;
        let mut fds_in = [const { None }; MAX_BURST];
        loop {
            match recv_many(&b, &mut fds_in) {
                Ok(got) => {
                    received += got.fds_received;
                    assert_eq!(got.rejected, 0);
                    for fd in &mut fds_in {
                        drop(fd.take());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(received, sent, "{name}");
        drop(fds);
        drop((a, b, files, some));
    }
    check.assert_unchanged();
}

#[test]
fn a_blocking_burst_waits_for_the_first_message_only() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    let (returned, has_returned) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let mut fds = [const { None }; MAX_BURST];
        // Nothing has been sent yet: a blocking burst waits for the first.
        let got = recv_many(&b, &mut fds);
        returned.send(()).unwrap();
        (got.map(|got| (got.fds_received, got.rejected)), b)
    });
    let file = file_with("first");
    send_fd(&a, &file).unwrap();
    // The second message is sent only once the burst has returned, or to
    // free a burst that waits for more than the first: then it fails.
    let waited_for_more = has_returned.recv_timeout(Duration::from_secs(60)).is_err();
    send_fd(&a, &file).unwrap();
    let (got, b) = receiver.join().unwrap();
    assert!(
        !waited_for_more,
        "recv_many waited for more than one message"
    );
    assert_eq!(got.unwrap(), (1, 0), "exactly the first message");
    drop(recv_fd(&b).unwrap());
    drop((a, b, file));
    check.assert_unchanged();
}

#[test]
fn a_closed_peer_ends_the_burst_then_is_unexpected_eof() {
    let check = NoLeak::start();
    for ty in [SocketType::STREAM, SocketType::SEQPACKET] {
        let (a, b) = pair(ty);
        let files = ten_files();
        send_many(&a, &numbered(&files, 4)).unwrap();
        drop(a);
        let mut fds = [const { None }; MAX_BURST];
        let got = recv_many(&b, &mut fds).unwrap();
        assert_eq!((got.fds_received, got.rejected), (4, 0));
        let err = recv_many(&b, &mut fds).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(fds.iter().flatten().count(), 4, "the end took nothing");
        drop((b, files, fds));
    }
    let (a, b) = pair(SocketType::STREAM);
    drop(b);
    let err = send_many(&a, &[a.as_fd()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    drop(a);
    check.assert_unchanged();
}

#[test]
fn no_empty_slot_is_invalid_input() {
    let check = NoLeak::start();
    let (a, b) = pair(SocketType::STREAM);
    send_fd(&a, &a).unwrap();
    let err = recv_many(&b, &mut []).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let mut full = [Some(OwnedFd::from(file_with("full")))];
    let err = recv_many(&b, &mut full).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    drop(full);
    // Nothing was consumed.
    drop(recv_fd(&b).unwrap());
    drop((a, b));
    check.assert_unchanged();
}
