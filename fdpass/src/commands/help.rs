//! `fdpass help`: the help of the tool or of a subcommand, as `--help`
//! prints it.

use clap::Parser;

use crate::cli::{Cli, HelpArgs};
use crate::fail::{self, Failure, Result};
use crate::output;

/// `fdpass help [COMMAND]`: what `fdpass [COMMAND] --help` prints, made by
/// the same parser, so that the two never differ.
pub fn run(args: &HelpArgs) -> Result<()> {
    let mut argv = vec!["fdpass".to_owned()];
    argv.extend(args.command.iter().cloned());
    argv.push("--help".to_owned());
    match Cli::try_parse_from(&argv) {
        Err(err) if !err.use_stderr() => output::print(&err.render().to_string()),
        Err(err) => Err(Failure::new(
            fail::USAGE,
            err.render()
                .to_string()
                .trim_start_matches("error: ")
                .trim_end(),
        )),
        Ok(_) => Err(Failure::new(
            fail::USAGE,
            format!("{} takes no --help", args.command.join(" ")),
        )),
    }
}
