//! systemd's notify messages (`notify::check_name`, the text each call
//! sends, and how a datagram is read): a name is accepted exactly when it
//! obeys systemd's rules; an accepted name's message reads back as its two
//! assignments and no more, so no name can smuggle in a line such as
//! `READY=1`; and any datagram reads as its lines, `READY=1` only where a
//! line says exactly that.

#![no_main]

use std::io::ErrorKind;

use io_fdpass::fuzzing::{notify_assignments, notify_text, says_ready};
use io_fdpass::notify::{check_name, MAX_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (choice, rest) = input.split_first().unwrap_or((&0, &[]));
    let name = String::from_utf8_lossy(rest);
    let rules = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':');
    match check_name(&name) {
        Ok(()) => assert!(rules, "{name:?}"),
        Err(e) => {
            assert!(!rules, "{name:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    let store = choice & 1 != 0;
    match notify_text(Some((&name, store))) {
        Ok(text) => {
            assert!(rules);
            let verb: &[u8] = if store { b"FDSTORE" } else { b"FDSTOREREMOVE" };
            assert_eq!(
                notify_assignments(text.as_bytes()),
                [(verb, &b"1"[..]), (&b"FDNAME"[..], name.as_bytes())]
            );
            assert!(!says_ready(text.as_bytes()));
        }
        Err(e) => {
            assert!(!rules);
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
    let ready = notify_text(None).unwrap();
    assert!(says_ready(ready.as_bytes()));
    assert_eq!(
        notify_assignments(ready.as_bytes()),
        [(&b"READY"[..], &b"1"[..])]
    );

    // Any datagram: lines split at their first `=`.
    let datagram = rest;
    for (key, value) in notify_assignments(datagram) {
        assert!(!key.contains(&b'=') && !key.contains(&b'\n'));
        assert!(!value.contains(&b'\n'));
    }
    let lines_with_eq = datagram
        .split(|&b| b == b'\n')
        .filter(|l| l.contains(&b'='))
        .count();
    assert_eq!(notify_assignments(datagram).len(), lines_with_eq);
    let ready_line = datagram.split(|&b| b == b'\n').any(|l| l == b"READY=1");
    assert_eq!(says_ready(datagram), ready_line);
});
