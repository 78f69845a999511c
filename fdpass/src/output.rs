//! What fdpass prints: on stdout, and messages on stderr, neither of which
//! may panic when closed or full.
//!
//! A standard fd that was closed when fdpass started stays closed to its
//! writes: std's start-up code opens /dev/null on a closed fd 0, 1 or 2,
//! after which a write to it would pass for a success.

use std::io::{self, Write};
#[cfg(unix)]
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};

/// A standard stream's number: 1 for stdout, 2 for stderr.
#[cfg(windows)]
type RawFd = i32;

use crate::fail::{self, Failure, Result};

/// Which of fds 0, 1 and 2 were closed when the process started, one bit
/// each.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

/// Notes which standard fds are closed. Run as the program is loaded,
/// before std's start-up code, as the C runtime runs constructors before
/// `main`.
#[cfg(unix)]
#[used]
#[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
#[cfg_attr(not(target_vendor = "apple"), link_section = ".init_array")]
static NOTE_CLOSED: extern "C" fn() = note_closed;

#[cfg(unix)]
extern "C" fn note_closed() {
    let closed = (0..=2)
        // SAFETY: the fd is only asked for its flags.
        .filter(|&fd| rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_err())
        .fold(0, |bits, fd| bits | 1 << fd);
    CLOSED_AT_START.store(closed, Ordering::Relaxed);
}

/// Whether fd `fd` (0, 1 or 2) was closed when fdpass started: what it
/// holds now is std's /dev/null, not the shell's fd.
pub fn closed_at_start(fd: RawFd) -> bool {
    (0..=2).contains(&fd) && CLOSED_AT_START.load(Ordering::Relaxed) & (1 << fd) != 0
}

/// Writes all of `bytes` to fd 1 or 2, and flushes it.
fn write(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    if closed_at_start(fd) {
        return Err(io::Error::other("it was closed when fdpass started"));
    }
    if fd == 1 {
        let mut out = io::stdout().lock();
        out.write_all(bytes).and_then(|()| out.flush())
    } else {
        io::stderr().lock().write_all(bytes)
    }
}

/// Writes `text` to stdout, all of it.
pub fn print(text: &str) -> Result<()> {
    print_bytes(text.as_bytes())
}

/// Writes `bytes` to stdout, all of them.
pub fn print_bytes(bytes: &[u8]) -> Result<()> {
    write(1, bytes).map_err(|err| Failure::new(fail::IO, format!("cannot write to stdout: {err}")))
}

/// Writes `text` to stderr as it is; false if it could not be written.
pub fn to_stderr(text: &str) -> bool {
    write(2, text.as_bytes()).is_ok()
}

/// Writes `fdpass: MESSAGE` to stderr; false if it could not be written.
pub fn message(what: std::fmt::Arguments<'_>) -> bool {
    to_stderr(&format!("fdpass: {what}\n"))
}

/// Where `-v` sends what a command does: a line on stderr for each step,
/// or nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub verbose: bool,
}

impl Log {
    /// Says `what`, with `-v`.
    pub fn say(self, what: std::fmt::Arguments<'_>) {
        if self.verbose {
            message(what);
        }
    }
}

/// `text` made safe to print on a terminal, one line of it: a backslash
/// becomes `\\`, a newline `\n`, a tab `\t`, a carriage return `\r`,
/// an escape `\e`, any other control character (and DEL) `\xNN`, or
/// `\u{NN}` beyond ASCII. Every field of text output that comes from
/// outside (a name, a path, a socket's address) is printed through it, as
/// `--json` prints through [`json_string`]: a newline cannot forge a line,
/// and an escape sequence cannot reach the terminal.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as JSON: its string, or `null`.
pub fn json_or_null(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_onto_one_line() {
        assert_eq!(escape("/tmp/x\n\u{1b}[31my"), "/tmp/x\\n\\e[31my");
        assert_eq!(escape("a\\b\tc\rd\u{0}\u{7f}"), "a\\\\b\\tc\\rd\\x00\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("é web 127.0.0.1:80"), "é web 127.0.0.1:80");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
    }
}
