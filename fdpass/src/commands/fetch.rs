//! `fdpass fetch`: fds from the holder, handed to a command.

use crate::cli::FetchArgs;
use crate::client;
use crate::exec;
use crate::fail::Result;

/// `fdpass fetch`: fetches (or takes) the names, then runs the command.
pub fn run(args: &FetchArgs) -> Result<()> {
    let program = exec::find(&args.command[0])?;
    let holder = super::holder_client(&args.holder);
    let wanted: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let fds = if args.take {
        holder.take_many(&wanted)
    } else {
        holder.fetch_many(&wanted)
    }
    .map_err(|e| client::failure(&args.holder.socket, &e))?;
    Err(exec::exec_with_fds(
        fds,
        &args.names,
        &program,
        &args.command,
        &[],
    ))
}
