//! One module per subcommand, each with one entry point, `run`. They stand
//! above the helpers they share (`address`, `client`, `exec`, `fail`,
//! `output`) and below `main`, which only parses and dispatches.

pub mod adopt;
pub mod completions;
pub mod drop;
pub mod fds;
pub mod fetch;
pub mod help;
pub mod hold;
pub mod list;
pub mod listen;
pub mod man;
pub mod recv;
pub mod send;
pub mod store;

use io_fdpass::holder::Client;

use crate::cli::HolderArgs;
use crate::client;

/// The library's client for the holder a command names, as its flags say.
fn holder_client(args: &HolderArgs) -> Client {
    client::client(&args.socket, args.timeout, &args.holder_uids)
}
