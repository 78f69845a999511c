//! `fdpass man`: the manual pages, from the same definitions as `--help`.

use std::io;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::fail::{Failure, Result};
use crate::output;

/// `fdpass man`: fdpass.1 on stdout, or with `dir`, every page written
/// there.
pub fn run(args: &ManArgs) -> Result<()> {
    let dir: Option<&Path> = args.dir.as_deref();
    // `help` says what `--help` says, which the pages say already.
    let mut top = Cli::command().mut_subcommand("help", |help| help.hide(true));
    top.build();
    let Some(dir) = dir else {
        return output::print_bytes(&page(&top, false).map_err(not_rendered)?);
    };
    let shown = top
        .get_subcommands()
        .filter(|command| !command.is_hide_set());
    let commands = std::iter::once(&top).chain(shown);
    for (i, command) in commands.enumerate() {
        let name = format!(
            "{}.1",
            command.get_display_name().unwrap_or(command.get_name())
        );
        let path = dir.join(&name);
        let text = page(command, i > 0).map_err(not_rendered)?;
        std::fs::write(&path, text)
            .map_err(|err| Failure::os(format_args!("cannot write {}", path.display()), err))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_shows_text_as_it_is() {
        assert_eq!(roff_line(".a\\b -- c"), "\\&.a\\eb \\-\\- c\n");
    }
}
