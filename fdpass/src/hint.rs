//! A hint for a command line clap refused: the `--` a command to run
//! needs.

use std::ffi::{OsStr, OsString};

use clap::{CommandFactory, Parser};

use crate::cli::Cli;

/// For a command line clap refused: if its subcommand runs a command and
/// no `--` sets that command off, the line with `--` put before the first
/// word where that makes the line good, to show the user.
pub fn separator_hint(args: &[OsString]) -> Option<String> {
    let sub = 1 + args
        .iter()
        .skip(1)
        .position(|arg| !arg.as_encoded_bytes().starts_with(b"-"))?;
    let mut cli = Cli::command();
    cli.build();
    let runs_a_command = cli
        .find_subcommand(&args[sub])?
        .get_arguments()
        .any(clap::Arg::is_last_set);
    if !runs_a_command || args[sub..].iter().any(|arg| arg == "--") {
        return None;
    }
    // A command starts with a word, not with an option of fdpass's.
    let words = (sub + 1..args.len()).filter(|&at| !args[at].as_encoded_bytes().starts_with(b"-"));
    let good = words.into_iter().find_map(|at| {
        let mut line = args.to_vec();
        line.insert(at, "--".into());
        Cli::try_parse_from(&line).is_ok().then_some(line)
    })?;
    let shown: Vec<String> = std::iter::once("fdpass".to_owned())
        .chain(good[1..].iter().map(|arg| quoted(arg)))
        .collect();
    Some(format!(
        "put `--` before the command to run: {}",
        shown.join(" ")
    ))
}

/// `arg` as a shell would take it back.
fn quoted(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b);
    if !text.is_empty() && text.bytes().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(line: &str) -> Option<String> {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        separator_hint(&args)
    }

    /// A socket as each OS's command line takes it.
    #[cfg(unix)]
    const SOCKET: &str = "/tmp/s";
    #[cfg(windows)]
    const SOCKET: &str = "tcp:127.0.0.1:7000";

    #[test]
    fn the_hint_puts_the_separator_where_the_line_parses() {
        assert_eq!(
            hint("fdpass listen tcp:127.0.0.1:8080 python3 server.py").as_deref(),
            Some("put `--` before the command to run: fdpass listen tcp:127.0.0.1:8080 -- python3 server.py")
        );
        assert_eq!(
            hint(&format!("fdpass -v recv {SOCKET} -n 2 sh -c x=$1")).as_deref(),
            Some(format!("put `--` before the command to run: fdpass -v recv {SOCKET} -n 2 -- sh -c 'x=$1'").as_str())
        );
        assert_eq!(
            hint(&format!("fdpass fetch {SOCKET} web server")).as_deref(),
            Some(
                format!("put `--` before the command to run: fdpass fetch {SOCKET} web -- server")
                    .as_str()
            )
        );
        // No command to run, a separator already there, or a line that
        // no separator mends.
        for line in [
            format!("fdpass list {SOCKET} extra"),
            "fdpass listen tcp:nohost -- true".to_owned(),
            "fdpass listen tcp:nohost true".to_owned(),
            "fdpass frobnicate x".to_owned(),
        ] {
            assert_eq!(hint(&line), None, "{line}");
        }
    }
}
