//! The one rule for names of fds, which the notify protocol, the
//! activation convention and the holder share on every OS.

use std::io::{self, ErrorKind};

/// The longest fd name systemd takes.
pub const MAX_NAME: usize = 255;

/// Checks `name` as a name for fds: systemd's rules for fd names, 1 to
/// [`MAX_NAME`] printable ASCII characters, none of them `:`, which
/// separates the names in `LISTEN_FDNAMES`; and no space, so that every
/// name io-fdpass gives out can be held by the holder, where a name is a
/// word of its protocol. The one rule for every name in the crate:
/// [`activation::Command::fd`](crate::activation::Command::fd),
/// `restart`, the fd store, and the holder.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`], saying which rule the name breaks.
pub fn check_name(name: &str) -> io::Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME {
        "it is longer than 255 characters"
    } else if name.contains(':') {
        "it contains ':', which separates names in LISTEN_FDNAMES"
    } else if name.contains(' ') {
        "it contains a space: a name is one word"
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        "it has a character that is not printable ASCII"
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        ErrorKind::InvalidInput,
        format!("{name:?} cannot name fds: {why}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_systemds_rules() {
        for good in ["http", "fdpass-hold", "web-1.socket_A", &"x".repeat(255)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(256);
        for (bad, why) in [
            ("", "empty"),
            (long.as_str(), "longer"),
            ("a:b", "':'"),
            ("a b", "space"),
            ("tab\there", "printable"),
            ("é", "printable"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
    }
}
