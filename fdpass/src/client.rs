//! The holder's client, as the commands that talk to a holder use it, and
//! what its errors mean as exit statuses.

use std::io;
#[cfg(unix)]
use std::os::fd::BorrowedFd;
#[cfg(windows)]
use std::os::windows::io::BorrowedSocket;
use std::time::Duration;

use io_fdpass::holder::protocol::{Lifetime, Refusal};
use io_fdpass::holder::Client;
use io_fdpass::PeerTrust;

use crate::address::{SocketName, STARTUP_GRACE};
use crate::fail::{self, Failure, Party, Result};

/// The library's client for the holder at `socket`, which trusts a holder
/// of this user, root, or one of `holder_uids`.
#[cfg(unix)]
pub fn client(socket: &SocketName, timeout: Duration, holder_uids: &[u32]) -> Client {
    let trust = PeerTrust::new().allow_uids(holder_uids.iter().copied());
    client_trusting(socket, timeout, trust)
}

/// The library's client for the holder at `socket`, which trusts a holder
/// of this user, SYSTEM, or one of `holder_users` (SIDs).
#[cfg(windows)]
pub fn client(socket: &SocketName, timeout: Duration, holder_users: &[String]) -> Client {
    let trust = PeerTrust::new().allow_users(holder_users.iter().cloned());
    client_trusting(socket, timeout, trust)
}

fn client_trusting(socket: &SocketName, timeout: Duration, trust: PeerTrust) -> Client {
    Client::new(socket.client_path())
        .timeout(timeout)
        .startup_grace(STARTUP_GRACE)
        .trust(trust)
}

/// What `store` gives the holder: an fd, or on Windows a socket.
#[cfg(unix)]
pub type Stored<'a> = BorrowedFd<'a>;
/// What `store` gives the holder: an fd, or on Windows a socket.
#[cfg(windows)]
pub type Stored<'a> = BorrowedSocket<'a>;

/// `fdpass store`.
pub fn store(
    client: &Client,
    socket: &SocketName,
    name: &str,
    fd: Stored<'_>,
    lifetime: Lifetime,
) -> Result<()> {
    client
        .store_with_lifetime(name, fd, lifetime)
        .map_err(|e| failure(socket, &e))
}

/// The failure, and exit status, for an error of the holder client.
pub fn failure(socket: &SocketName, err: &io::Error) -> Failure {
    if let Some(refusal) = err.get_ref().and_then(|e| e.downcast_ref::<Refusal>()) {
        return Failure::new(
            fail::refusal_code(refusal.kind),
            format!("{socket}: {refusal}"),
        );
    }
    Failure::new(fail::code(err.kind(), Party::Holder), err.to_string())
}
