//! `fdpass hold` on Windows: keeps sockets under names while the programs
//! that use them come and go.
//!
//! The library's state machine decides and its Windows server serves
//! (`io_fdpass::holder::Server`): loopback TCP, a thread per client with a
//! deadline for its whole request, each peer's process and user checked as
//! soon as it connects. What Unix's holder adds is not there: no state
//! file, no systemd fd store, no upgrade on SIGHUP (Windows has no
//! signals to ask for one), no `--from`; it serves until it is ended.

use io_fdpass::holder::{Holder, Server, System};
use io_fdpass::PeerTrust;

use crate::cli::HoldArgs;
use crate::fail::{Failure, Result};
use crate::output::Log;

/// `fdpass hold`: listens at the address and serves until ended.
pub fn run(args: &HoldArgs, log: Log) -> Result<()> {
    let listener = args.socket.listen()?;
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
