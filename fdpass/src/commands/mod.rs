//! One module per subcommand, each with one entry point, `run`. They stand
//! above the helpers they share (`address`, `client`, `exec`, `fail`,
//! `output`) and below `main`, which only parses and dispatches.

#[cfg(unix)]
pub mod adopt;
pub mod completions;
pub mod drop;
#[cfg(unix)]
pub mod fds;
#[cfg_attr(windows, path = "fetch_windows.rs")]
pub mod fetch;
pub mod help;
#[cfg_attr(windows, path = "hold_windows.rs")]
pub mod hold;
pub mod list;
#[cfg_attr(windows, path = "listen_windows.rs")]
pub mod listen;
pub mod man;
#[cfg(unix)]
pub mod recv;
#[cfg(unix)]
pub mod send;
#[cfg_attr(windows, path = "store_windows.rs")]
pub mod store;

use io_fdpass::holder::protocol::Lifetime;
use io_fdpass::holder::Client;

use crate::cli::{HolderArgs, StoreArgs};
use crate::client;

/// The library's client for the holder a command names, as its flags say.
fn holder_client(args: &HolderArgs) -> Client {
    #[cfg(unix)]
    let trusted = &args.holder_uids;
    #[cfg(windows)]
    let trusted = &args.holder_users;
    client::client(&args.socket, args.timeout, trusted)
}

/// How long `fdpass store` has the holder keep what it stores, as its
/// `--ttl` and `--until-exit` say; without them, for as long as it runs.
fn lifetime(args: &StoreArgs) -> Lifetime {
    let mut lifetime = Lifetime::forever();
    if let Some(ttl) = args.ttl {
        lifetime = lifetime.ttl(ttl);
    }
    if let Some(pid) = args.until_exit {
        lifetime = lifetime.until_exit(pid);
    }
    lifetime
}
