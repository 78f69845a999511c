//! `fdpass hold`: the holder.

use crate::cli::HoldArgs;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass hold`: serves until SIGTERM or SIGINT.
pub fn run(args: &HoldArgs, log: Log) -> Result<()> {
    crate::holder::run(args, log.verbose)
}
