//! What an `IO::FDPass` message is, apart from the system calls that carry
//! it: whether a received message is good. Pure code, generic over the fd type, so that the rules
//! are unit-tested on their own and the same rules serve `recv_fd`, `recv_batch`,
//! `recv_many` and every caller of them.
//!
//! The items are `pub` so that `crate::fuzzing` can hand them to the fuzz
//! targets; the module is private, and none of it is the crate's API.
#![cfg_attr(fuzzing, allow(clippy::must_use_candidate))]

use std::io::{self, ErrorKind};

use crate::Received;

/// What one received message is, by `IO::FDPass`'s format.
#[derive(Debug)]
pub enum Verdict<T> {
    /// A good message, and what was kept of its fds.
    Good(T),
    /// Nothing at all: the end of the connection, or an empty message; the
    /// caller tells the two apart (see [`end`]).
    End,
    /// A message that breaks the format. Its fds are the caller's to close.
    Bad(io::Error),
}

/// Judges one message of `IO::FDPass`'s format, the byte `0` with at least
/// one fd: `got` says what arrived, `byte` is the data byte (when
/// `got.bytes` is 1), and `kept` what the receive kept of the fds, `None`
/// when it kept none. Surplus fds do not make a message bad.
pub fn judge<T>(got: &Received, byte: u8, kept: Option<T>) -> Verdict<T> {
    let arrived = got.fds_received + got.fds_discarded;
    if got.control_truncated {
        return Verdict::Bad(truncated(arrived));
    }
    if got.bytes == 0 {
        return match arrived {
            0 => Verdict::End,
            _ => Verdict::Bad(invalid_data(format!(
                "the message carried {arrived} fd(s) but no data byte; all were closed"
            ))),
        };
    }
    if got.data_truncated {
        return Verdict::Bad(invalid_data(format!(
            "the datagram was longer than the one byte IO::FDPass sends; {arrived} fd(s) that \
             came with it were closed"
        )));
    }
    if byte != 0 {
        return Verdict::Bad(invalid_data(format!(
            "the data byte was {byte:#04x}, not the 0 IO::FDPass sends; {arrived} fd(s) that \
             came with it were closed"
        )));
    }
    match kept {
        Some(kept) if got.fds_received > 0 => Verdict::Good(kept),
        _ => Verdict::Bad(invalid_data("the message carried no fd")),
    }
}

/// Judges a message that must bring all its fds: as [`judge`], and a
/// message with more fds than the receive had room for is bad too. Good
/// gives the number of fds kept.
pub fn judge_all(got: &Received, byte: u8) -> Verdict<usize> {
    match judge(got, byte, Some(got.fds_received)) {
        Verdict::Good(_) if got.fds_discarded > 0 => Verdict::Bad(invalid_data(format!(
            "the message carried {} fds, more than the {} asked for; all were closed",
            got.fds_received + got.fds_discarded,
            got.fds_received
        ))),
        verdict => verdict,
    }
}

/// The error for [`Verdict::End`]: an empty message (`empty`), or the peer
/// closing the connection.
pub fn end(empty: bool) -> io::Error {
    if empty {
        invalid_data("received an empty message instead of an fd")
    } else {
        io::Error::new(
            ErrorKind::UnexpectedEof,
            "the peer closed the connection before sending an fd",
        )
    }
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

/// The error for a message whose control data the kernel truncated.
fn truncated(arrived: usize) -> io::Error {
    io::Error::new(
        ErrorKind::QuotaExceeded,
        format!(
            "the kernel could not deliver every fd of the message (MSG_CTRUNC): this process \
             is probably at its open-file limit (RLIMIT_NOFILE); {arrived} fd(s) that did \
             arrive were closed"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of one data byte with `fds` fds kept and `discarded` more.
    fn message(byte_count: usize, fds: usize, discarded: usize) -> Received {
        Received {
            bytes: byte_count,
            fds_received: fds,
            fds_discarded: discarded,
            ..Received::default()
        }
    }

    fn bad<T: std::fmt::Debug>(verdict: Verdict<T>) -> io::Error {
        match verdict {
            Verdict::Bad(e) => e,
            other => panic!("expected a bad message, got {other:?}"),
        }
    }

    #[test]
    fn the_byte_zero_with_an_fd_is_good() {
        assert!(matches!(
            judge(&message(1, 1, 0), 0, Some('a')),
            Verdict::Good('a')
        ));
    }

    #[test]
    fn surplus_fds_do_not_spoil_a_message_but_do_for_judge_all() {
        assert!(matches!(
            judge(&message(1, 1, 4), 0, Some(())),
            Verdict::Good(())
        ));
        let e = bad(judge_all(&message(1, 2, 3), 0));
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(e.to_string().contains("5 fds, more than the 2"), "{e}");
        assert!(matches!(judge_all(&message(1, 3, 0), 0), Verdict::Good(3)));
    }

    #[test]
    fn nothing_at_all_is_the_end() {
        assert!(matches!(
            judge::<()>(&message(0, 0, 0), 0xff, None),
            Verdict::End
        ));
        assert!(matches!(judge_all(&message(0, 0, 0), 0xff), Verdict::End));
    }

    #[test]
    fn every_break_of_the_format_is_invalid_data_and_says_what() {
        let cases = [
            (message(0, 1, 0), 0, "no data byte"),
            (message(0, 0, 2), 0, "2 fd(s) but no data byte"),
            (message(1, 1, 0), 7, "data byte was 0x07"),
            (message(1, 0, 0), 0, "carried no fd"),
            (
                Received {
                    data_truncated: true,
                    ..message(1, 1, 0)
                },
                0,
                "longer than the one byte",
            ),
        ];
        for (got, byte, says) in cases {
            let e = bad(judge(&got, byte, (got.fds_received > 0).then_some(())));
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{got:?}");
            assert!(e.to_string().contains(says), "{got:?}: {e}");
        }
    }

    #[test]
    fn truncated_control_data_is_a_quota_error_whatever_else_came() {
        for got in [message(1, 1, 0), message(0, 0, 0), message(1, 0, 0)] {
            let got = Received {
                control_truncated: true,
                ..got
            };
            let e = bad(judge(&got, 0, Some(())));
            assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
            assert!(e.to_string().contains("RLIMIT_NOFILE"), "{e}");
        }
    }

    #[test]
    fn a_kept_fd_without_a_count_is_not_good() {
        // `kept` alone does not make a message good: the count says what
        // the kernel delivered.
        let e = bad(judge(&message(1, 0, 1), 0, Some(())));
        assert!(e.to_string().contains("no fd"), "{e}");
    }

    #[test]
    fn end_is_eof_or_invalid_data() {
        assert_eq!(end(false).kind(), ErrorKind::UnexpectedEof);
        assert_eq!(end(true).kind(), ErrorKind::InvalidData);
    }
}
