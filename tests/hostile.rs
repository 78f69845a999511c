//! A peer that sends anything: random data with random numbers of fds, on
//! every socket type, taken by every receive call with random room. Whatever
//! arrives, each fd handed out is one the peer sent, the counts add up, and
//! no fd is left open.
//!
//! The messages come from a fixed seed, so a failure repeats; set
//! `IO_FDPASS_SEED` to try others.

#![cfg(unix)]

mod util;

use std::io::{ErrorKind, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use io_fdpass::{recv_fd, recv_fds, recv_many, MAX_FDS};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use util::{all_types, file_with, pair, NoLeak};

/// xorshift64*: enough randomness for choosing messages, and repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// One message as a hostile peer might write it: 0 to 3 data bytes, mostly
/// the byte 0, and 0 to 4 fds or now and then the most a message carries.
fn send_anything(rng: &mut Rng, socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) {
    let data: Vec<u8> = (0..rng.below(4))
        .map(|_| if rng.chance(2) { 0 } else { rng.next() as u8 })
        .collect();
    let count = if rng.chance(10) {
        MAX_FDS
    } else {
        rng.below(5)
    };
    let fds = vec![fd; count];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if count > 0 {
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    }
    // A stream socket sends nothing for an empty message; a full buffer
    // refuses it. Neither matters here: what was sent is received below.
    let _ = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&data)],
        &mut control,
        SendFlags::DONTWAIT,
    );
}

/// What tells one open file from another: its device and inode.
fn file_id(fd: impl AsFd) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).unwrap();
    (stat.st_dev as u64, stat.st_ino as u64)
}

/// Receives with a random call until nothing is left, or until the end if
/// the peer has `closed` a connection. Every fd received must be the file
/// the peer sends, `file`.
fn receive_everything(rng: &mut Rng, socket: BorrowedFd<'_>, closed: bool, file: (u64, u64)) {
    let is_the_file = |fd: &OwnedFd| file_id(fd) == file;
    let mut data = [0; 8];
    for _ in 0..100_000 {
        let result = match rng.below(3) {
            0 => recv_fd(socket).map(|fd| assert!(is_the_file(&fd))),
            1 => {
                let mut fds = [const { None }; 6];
                let slots = rng.below(fds.len());
                let room = 1 + rng.below(data.len());
                recv_fds(socket, &mut data[..room], &mut fds[..slots]).map(|got| {
                    assert_eq!(got.fds_received, fds.iter().flatten().count(), "{got:?}");
                    assert!(got.bytes <= room, "{got:?}");
                    assert!(fds.iter().flatten().all(is_the_file));
                })
            }
            _ => {
                let mut fds = [const { None }; 2 * io_fdpass::MAX_BURST];
                let slots = 1 + rng.below(fds.len());
                recv_many(socket, &mut fds[..slots]).map(|got| {
                    assert_eq!(got.fds_received, fds.iter().flatten().count(), "{got:?}");
                    assert_eq!(got.rejected > 0, got.first_rejection.is_some(), "{got:?}");
                    assert!(fds.iter().flatten().all(is_the_file));
                })
            }
        };
        match result {
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            // Only a peer that is gone makes a call see an end.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                assert!(closed, "{e}");
                return;
            }
            Err(_) | Ok(()) => {}
        }
    }
    panic!("the receive calls never drain the socket");
}

/// Now and then asks Linux to add credentials (`SO_PASSCRED`) or a pidfd
/// (`SO_PASSPIDFD`, where the kernel has it) to every message received.
#[cfg(fdpass_linux_kernel)]
fn extra_control_messages(rng: &mut Rng, socket: BorrowedFd<'_>) {
    if rng.chance(4) {
        rustix::net::sockopt::set_socket_passcred(socket, true).unwrap();
    }
    if rng.chance(4) {
        // A kernel without the option refuses it, which changes nothing
        // here.
        let _ = io_fdpass_test_support::set_pass_pidfd(socket, true);
    }
}

#[test]
fn whatever_a_peer_sends_no_fd_is_lost_or_leaked() {
    let seed = std::env::var("IO_FDPASS_SEED").map_or(0x5eed_f00d_cafe_d00d_u64, |s| {
        s.parse().expect("IO_FDPASS_SEED: a number")
    });
    let mut rng = Rng(seed | 1);
    let check = NoLeak::start();
    let start = util::fd_count();
    let file = file_with("the file");
    for round in 0..1000 {
        for (name, ty) in all_types() {
            let (a, b) = pair(ty);
            rustix::io::ioctl_fionbio(&b, true).unwrap();
            #[cfg(fdpass_linux_kernel)]
            extra_control_messages(&mut rng, b.as_fd());
            for _ in 0..=rng.below(8) {
                send_anything(&mut rng, a.as_fd(), file.as_fd());
            }
            let closed = rng.chance(3);
            let a = if closed {
                drop(a);
                None
            } else {
                Some(a)
            };
            receive_everything(&mut rng, b.as_fd(), closed, file_id(&file));
            drop((a, b));
            // Only the file is open beyond what was open at the start.
            assert!(
                util::fd_count() == start + 1,
                "seed {seed}, round {round}, {name}: {:?}",
                util::open_fds()
            );
        }
    }
    drop(file);
    check.assert_unchanged();
}
