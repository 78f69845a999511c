//! `fdpass adopt`: fds taken out of a running process, handed to a command
//! or the holder.

use crate::cli::AdoptArgs;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass adopt`.
pub fn run(args: &AdoptArgs, log: Log) -> Result<()> {
    crate::adopt::run(args, log.verbose)
}
