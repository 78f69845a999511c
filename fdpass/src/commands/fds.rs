//! `fdpass fds`: what another process's fds are.

use crate::cli::FdsArgs;
use crate::fail::Result;

/// `fdpass fds`.
pub fn run(args: &FdsArgs) -> Result<()> {
    crate::adopt::show_fds(args.pid, args.json)
}
