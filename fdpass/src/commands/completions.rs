//! `fdpass completions`: a completion script for a shell.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::fail::Result;
use crate::output;

/// `fdpass completions SHELL`.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "fdpass", &mut script);
    output::print_bytes(&script)
}
