//! `fdpass hold` on Windows: keeps sockets under names while the programs
//! that use them come and go.
//!
//! The library's state machine decides and its Windows server serves
//! (`io_fdpass::holder::Server`): an `AF_UNIX` path or loopback TCP, a
//! thread per client with a deadline for its whole request, each peer's
//! process and user checked before its request is read. At a path, a
//! stale socket file is replaced and anything else refused
//! (`io_fdpass::holder::Listener`). What Unix's holder adds is not there:
//! no state file, no systemd fd store, no upgrade on SIGHUP (Windows has
//! no signals to ask for one), no `--from`, no mode or group for the
//! socket file; it serves until it is ended. Ended by its console
//! (Ctrl+C, Ctrl+Break), it removes its socket file first, as it does on
//! SIGINT on Unix.

use io_fdpass::holder::{Holder, Server, System};
use io_fdpass::PeerTrust;

use crate::cli::HoldArgs;
use crate::fail::{Failure, Result};
use crate::output::Log;

/// `fdpass hold`: listens at the address and serves until ended.
pub fn run(args: &HoldArgs, log: Log) -> Result<()> {
    let listener = args.socket.listen()?;
    listener
        .exit_on_console_event()
        .map_err(|err| Failure::os("cannot take the console's Ctrl+C", err))?;
    let trust = PeerTrust::new().allow_users(args.allow_users.iter().cloned());
    log.say(format_args!("holding at {}, serving {trust}", args.socket));
    let server = Server::new(listener)
        .with_holder(Holder::new(System, args.max_names))
        .trust(trust)
        .client_timeout(args.client_timeout);
    let server = if log.verbose {
        server.log(|message| {
            crate::output::message(format_args!("hold: {message}"));
        })
    } else {
        server
    };
    server
        .run()
        .map_err(|err| Failure::os("the holder stopped", err))
}
