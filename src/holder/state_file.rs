//! The format of a holder's state file, as pure code: text in, text out.
//!
//! The state file records what a holder holds, so that the fds can go
//! elsewhere with their names, metadata and lifetimes: to the next image
//! of the holder, and to systemd's fd store, which hands them back after a
//! crash. It is a head line, then optionally `socket DEV INO` (the identity
//! of the holder's socket file), then one `list` entry per held fd
//! ([`Entry::line`]), then `end COUNT`. The file is rewritten in place on
//! each change, so a text cut short by a crash is possible, and is ignored
//! as a whole. Keeping the file (a memfd, written with `pwrite`) is the
//! I/O side's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::protocol::Entry;

/// The first line of a state file.
pub const HEAD: &str = "fdpass-hold-state 1";

/// What a state file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// The device and inode numbers of the holder's socket file, while it
    /// was the holder's.
    pub socket: Option<(u64, u64)>,
    /// What is held, by name.
    pub entries: BTreeMap<String, Entry>,
}

/// The text of a state file that records `entries`, and `socket` as the
/// identity of the holder's socket file.
pub fn encode<'a>(
    socket: Option<(u64, u64)>,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> String {
    let mut text = format!("{HEAD}\n");
    if let Some((dev, ino)) = socket {
        let _ = writeln!(text, "socket {dev} {ino}");
    }
    let mut count = 0;
    for entry in entries {
        text.push_str(&entry.line());
        count += 1;
    }
    let _ = writeln!(text, "end {count}");
    text
}

/// Parses a state file's text; `None` unless it is whole: its head, its
/// lines well formed, and its `end` line with the right count.
#[must_use]
pub fn parse(text: &str) -> Option<Recorded> {
    let mut lines = text.lines();
    if lines.next()? != HEAD {
        return None;
    }
    let mut recorded = Recorded::default();
    for line in lines {
        if let Some(count) = line.strip_prefix("end ") {
            return (count.parse() == Ok(recorded.entries.len())).then_some(recorded);
        }
        if let Some(identity) = line.strip_prefix("socket ") {
            let (dev, ino) = identity.split_once(' ')?;
            recorded.socket = Some((dev.parse().ok()?, ino.parse().ok()?));
            continue;
        }
        let entry = Entry::parse(line).ok()?;
        recorded.entries.insert(entry.name.clone(), entry);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry::parse("web kind=tcp%20listener uid=1 stored=5 expires=9").unwrap()
    }

    #[test]
    fn state_round_trips() {
        let entry = entry();
        let text = encode(Some((1, 2)), [&entry]);
        let recorded = parse(&text).unwrap();
        assert_eq!(recorded.socket, Some((1, 2)));
        assert_eq!(recorded.entries["web"], entry);
        assert_eq!(recorded.entries.len(), 1);
        let empty = parse(&encode(None, [])).unwrap();
        assert!(empty.entries.is_empty() && empty.socket.is_none());
    }

    #[test]
    fn a_state_file_cut_off_is_ignored() {
        let entry = entry();
        let whole = format!("{HEAD}\n{}end 1\n", entry.line());
        assert_eq!(parse(&whole).unwrap().entries.len(), 1);
        for cut in [
            String::new(),
            format!("{HEAD}\n"),
            format!("{HEAD}\n{}", entry.line()),
            format!("{HEAD}\n{}end 2\n", entry.line()),
            format!("{HEAD}\n{}end", entry.line()),
            format!("{HEAD}\nweb kind=%4\nend 1\n"),
            format!("{HEAD}\nsocket 1\nend 0\n"),
            "fdpass-hold-state 2\nend 0\n".to_owned(),
        ] {
            assert!(parse(&cut).is_none(), "{cut:?}");
        }
    }
}
