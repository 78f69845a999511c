//! What fdpass prints: on stdout, and messages on stderr, neither of which
//! may panic when closed or full.

use std::io::Write;

use crate::fail::{self, Failure, Result};

/// Writes `text` to stdout, all of it.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| Failure::new(fail::IO, format!("cannot write to stdout: {err}")))
}

/// Writes `fdpass: MESSAGE` to stderr; false if it could not be written.
pub fn message(what: std::fmt::Arguments<'_>) -> bool {
    writeln!(std::io::stderr().lock(), "fdpass: {what}").is_ok()
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
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
    }
}
