//! `fdpass store`: gives an fd of this process to the holder.

use std::os::fd::{AsFd, AsRawFd};

use crate::cli::StoreArgs;
use crate::client;
use crate::exec;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass store`.
pub fn run(args: &StoreArgs, log: Log) -> Result<()> {
    let fd = exec::inherited(args.fd)?;
    let holder = &args.holder;
    client::store(
        &super::holder_client(holder),
        &holder.socket,
        &args.name,
        fd.as_fd(),
        super::lifetime(args),
    )?;
    log.say(format_args!(
        "stored fd {} as {} at {}",
        fd.as_raw_fd(),
        args.name,
        holder.socket
    ));
    Ok(())
}
