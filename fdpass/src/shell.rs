//! What a shell user expects of a command: completion scripts, manual
//! pages, and a hint where the command to run was not set off with `--`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use clap::{CommandFactory, Parser};

use crate::cli::Cli;
use crate::fail::{Failure, Result};
use crate::output;

/// `fdpass completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fdpass", &mut script);
    output::print_bytes(&script)
}

/// `fdpass man`: fdpass.1 on stdout, or with `dir`, every page written
/// there.
pub fn man(dir: Option<&Path>, log: impl Fn(std::fmt::Arguments<'_>)) -> Result<()> {
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let Some(dir) = dir else {
        return output::print_bytes(&page(&top, false).map_err(not_rendered)?);
    };
    let commands = std::iter::once(&top).chain(top.get_subcommands());
    for (i, command) in commands.enumerate() {
        let name = format!(
            "{}.1",
            command.get_display_name().unwrap_or(command.get_name())
        );
        let path = dir.join(&name);
        let text = page(command, i > 0).map_err(not_rendered)?;
        std::fs::write(&path, text)
            .map_err(|err| Failure::os(format_args!("cannot write {}", path.display()), err))?;
        log(format_args!("wrote {}", path.display()));
    }
    Ok(())
}

fn not_rendered(err: io::Error) -> Failure {
    Failure::os("cannot render the manual page", err)
}

/// The page of `command` (of the whole tool, or with `sub` of one
/// subcommand): `clap_mangen`'s sections, with the text shown after
/// `--help` (the exit status, or the examples) as a section of its own.
fn page(command: &clap::Command, sub: bool) -> io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone());
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(&mut roff)?;
    }
    if command.has_subcommands() {
        man.render_subcommands_section(&mut roff)?;
    }
    if let Some(after) = command.get_after_help() {
        let after = after.to_string();
        let (heading, body) = after.split_once('\n').unwrap_or((&after, ""));
        let heading = heading.trim_end_matches(':').to_uppercase();
        roff.extend(format!(".SH \"{heading}\"\n.nf\n").bytes());
        for line in body.lines() {
            roff.extend(roff_line(line).bytes());
        }
        roff.extend(b".fi\n");
    }
    if sub {
        roff.extend(b".SH \"SEE ALSO\"\nfdpass(1)\n");
    } else {
        man.render_version_section(&mut roff)?;
    }
    Ok(roff)
}

/// A line of text for roff, shown as it is.
fn roff_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    if line.starts_with(['.', '\'']) {
        out.push_str("\\&");
    }
    for c in line.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// For a command line clap refused: if its subcommand runs a command and
/// no `--` sets that command off, the line with `--` put before the first
/// word where that makes the line good, to show the user.
pub fn separator_hint(args: &[OsString]) -> Option<String> {
    let sub = 1 + args
        .iter()
        .skip(1)
        .position(|arg| !arg.as_encoded_bytes().starts_with(b"-"))?;
    let runs_a_command = Cli::command()
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

    #[test]
    fn the_hint_puts_the_separator_where_the_line_parses() {
        assert_eq!(
            hint("fdpass listen tcp:127.0.0.1:8080 python3 server.py").as_deref(),
            Some("put `--` before the command to run: fdpass listen tcp:127.0.0.1:8080 -- python3 server.py")
        );
        assert_eq!(
            hint("fdpass -v recv /tmp/s -n 2 sh -c x=$1").as_deref(),
            Some("put `--` before the command to run: fdpass -v recv /tmp/s -n 2 -- sh -c 'x=$1'")
        );
        assert_eq!(
            hint("fdpass fetch /tmp/s web server").as_deref(),
            Some("put `--` before the command to run: fdpass fetch /tmp/s web -- server")
        );
        // No command to run, a separator already there, or a line that
        // no separator mends.
        for line in [
            "fdpass list /tmp/s extra",
            "fdpass listen tcp:nohost -- true",
            "fdpass listen tcp:nohost true",
            "fdpass frobnicate x",
        ] {
            assert_eq!(hint(line), None, "{line}");
        }
    }

    #[test]
    fn roff_shows_text_as_it_is() {
        assert_eq!(roff_line(".a\\b -- c"), "\\&.a\\eb \\-\\- c\n");
    }
}
