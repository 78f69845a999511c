//! `fdpass store` on Windows: gives the holder the socket this command was
//! given (by `fdpass listen` or `fdpass fetch`, or any starter that speaks
//! systemfd's protocol). Windows has no fd numbers to name one by.

use io_fdpass::activation::ListenFds;
use std::os::windows::io::AsSocket;

use crate::cli::StoreArgs;
use crate::client;
use crate::fail::{self, Failure, Result};
use crate::output::Log;

/// `fdpass store`: the one socket given, or the one given under NAME.
pub fn run(args: &StoreArgs, log: Log) -> Result<()> {
    let mut given = ListenFds::take().map_err(|err| {
        Failure::new(
            fail::code(err.kind(), fail::Party::Peer),
            format!("cannot take the sockets this command was given: {err}"),
        )
    })?;
    let index = match given.len() {
        0 => {
            return Err(Failure::new(
                fail::NO_INPUT,
                "store takes the socket its command was given, and none was: run it under `fdpass listen` or `fdpass fetch`",
            ))
        }
        1 => 0,
        n => given.index_of(&args.name).ok_or_else(|| {
            Failure::new(
                fail::USAGE,
                format!(
                    "{n} sockets were given, none named {}: name the one to store",
                    args.name
                ),
            )
        })?,
    };
    let socket = given
        .take_socket(index)
        .ok_or_else(|| Failure::new(fail::NO_INPUT, "the socket given is no longer there"))?;
    let holder = &args.holder;
    client::store(
        &super::holder_client(holder),
        &holder.socket,
        &args.name,
        socket.as_socket(),
        super::lifetime(args),
    )?;
    log.say(format_args!(
        "stored a socket as {} at {}",
        args.name, holder.socket
    ));
    Ok(())
}
