//! The rules of an `IO::FDPass` message (`wire::judge`, `judge_all`,
//! `end`), on every `Received` a receive could report: a message is good
//! exactly when it is whole, its one data byte is 0 and an fd came with
//! it; nothing at all is the end; everything else is bad, and says why
//! with the error kind the docs give.

#![no_main]

use std::io::ErrorKind;

use io_fdpass::fuzzing::{end, judge, judge_all, received, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut bytes = input.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let flags = next();
    let got = received(
        usize::from(next() % 3),
        usize::from(next()),
        usize::from(next()),
        flags & 1 != 0,
        flags & 2 != 0,
    );
    let byte = next();
    let kept = (flags & 4 != 0).then_some(flags);
    let arrived = got.fds_received + got.fds_discarded;

    // Whole, its byte 0, and an fd delivered.
    let good_message = !got.control_truncated
        && got.bytes > 0
        && !got.data_truncated
        && byte == 0
        && got.fds_received > 0;
    let whole_and_good = good_message && kept.is_some();
    let nothing = !got.control_truncated && got.bytes == 0 && arrived == 0;
    match judge(&got, byte, kept) {
        Verdict::Good(k) => {
            assert!(whole_and_good, "{got:?} {byte} {kept:?}");
            assert_eq!(Some(k), kept);
        }
        Verdict::End => assert!(nothing, "{got:?}"),
        Verdict::Bad(e) => {
            assert!(!whole_and_good && !nothing, "{got:?} {byte} {kept:?}: {e}");
            let kind = if got.control_truncated {
                ErrorKind::QuotaExceeded
            } else {
                ErrorKind::InvalidData
            };
            assert_eq!(e.kind(), kind, "{got:?}: {e}");
            // Where fds came, the message says how many were closed.
            if arrived > 0 && (got.control_truncated || got.data_truncated || byte != 0) {
                assert!(e.to_string().contains(&arrived.to_string()), "{e}");
            }
        }
    }

    // judge_all: as judge, and good only with every fd kept.
    match judge_all(&got, byte) {
        Verdict::Good(n) => {
            assert!(good_message && got.fds_discarded == 0, "{got:?} {byte}");
            assert_eq!(n, got.fds_received);
        }
        Verdict::End => assert!(nothing, "{got:?}"),
        Verdict::Bad(e) => {
            assert!(!nothing, "{got:?}");
            assert!(!good_message || got.fds_discarded > 0, "{got:?}: {e}");
            assert!(
                matches!(e.kind(), ErrorKind::QuotaExceeded | ErrorKind::InvalidData),
                "{e}"
            );
            assert_eq!(e.kind() == ErrorKind::QuotaExceeded, got.control_truncated);
        }
    }

    assert_eq!(end(true).kind(), ErrorKind::InvalidData);
    assert_eq!(end(false).kind(), ErrorKind::UnexpectedEof);
});
