//! `fdpass drop`: has the holder close what it holds under a name.

use crate::cli::DropArgs;
use crate::client;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass drop`.
pub fn run(args: &DropArgs, log: Log) -> Result<()> {
    let holder = &args.holder;
    super::holder_client(holder)
        .drop(&args.name)
        .map_err(|e| client::failure(&holder.socket, &e))?;
    log.say(format_args!("dropped {} at {}", args.name, holder.socket));
    Ok(())
}
