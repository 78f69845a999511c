//! `fdpass fetch` on Windows: sockets from the holder, handed to a command
//! by the protocol of `io_fdpass::activation`.

use crate::cli::FetchArgs;
use crate::client;
use crate::exec;
use crate::fail::{self, Failure, Result};

/// `fdpass fetch`: fetches (or takes) the names, runs the command with
/// them, and passes on its exit status.
///
/// A take is committed only once the command has its sockets: until then
/// a failure (the command not found, gone before it asked, or this
/// process's death) leaves them with the holder.
pub fn run(args: &FetchArgs) -> Result<()> {
    let holder = super::holder_client(&args.holder);
    let wanted: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let failed = |e: std::io::Error| client::failure(&args.holder.socket, &e);
    if !args.take {
        let sockets = holder.fetch_many(&wanted).map_err(failed)?;
        return Err(exec::run_with_sockets(
            &sockets,
            &args.names,
            &args.command,
            |_| Ok(()),
        ));
    }
    let reserved = holder.reserve(&wanted).map_err(failed)?;
    let sockets: Vec<_> = reserved
        .sockets()
        .iter()
        .map(std::os::windows::io::OwnedSocket::try_clone)
        .collect::<std::io::Result<_>>()
        .map_err(|err| Failure::os("cannot keep the sockets taken", err))?;
    let mut reserved = Some(reserved);
    Err(exec::run_with_sockets(
        &sockets,
        &args.names,
        &args.command,
        |handed_over| {
            handed_over.map_err(|err| {
                Failure::new(
                    fail::CANNOT_EXECUTE,
                    format!(
                        "the command did not take its sockets ({err}); the holder still holds {}",
                        args.names.join(" ")
                    ),
                )
            })?;
            match reserved.take() {
                Some(reserved) => reserved.commit().map(drop).map_err(failed),
                None => Ok(()),
            }
        },
    ))
}
