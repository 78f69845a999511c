//! The holder's event loop: the library's server, fed the signals, with
//! what only `fdpass hold` does as its hooks: systemd's fd store, the
//! state file and the log.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use io_fdpass::holder::state_file::encode;
use io_fdpass::holder::{Effect, Holder, Hooks, Server, System};
use io_fdpass::notify::Notifier;
use io_fdpass::PeerTrust;

use super::signals::{Asked, Signals};
use super::state_file::StateFile;
use super::{start, upgrade, Settings};
use crate::address::file_identity;
use crate::fail::{Failure, Result};

/// What the holder keeps besides the fds: its state file, systemd's fd
/// store, its socket file, its log.
pub struct Keeper {
    pub state: StateFile,
    pub systemd: Option<Notifier>,
    /// The socket file and its identity, while it is this holder's.
    pub socket_file: Option<(PathBuf, (u64, u64))>,
    pub verbose: bool,
    /// Given by the previous image, which waits for one byte on it to let
    /// go of the fds: written once this image serves.
    pub handover: Option<OwnedFd>,
}

/// Serves until SIGTERM or SIGINT, and upgrades on SIGHUP.
pub async fn serve(settings: Settings, given: start::Given) -> Result<()> {
    let mut signals =
        Signals::install().map_err(|err| Failure::os("cannot set up signal handling", err))?;
    raise_fd_limit();
    let (listener, holder, mut keeper) = start::start(&settings, given)?;
    let setup_failed = |err| Failure::os("cannot set up the socket", err);
    listener.set_nonblocking(true).map_err(setup_failed)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(setup_failed)?;
    let handover = keeper.handover.take();
    let keeper = Arc::new(keeper);
    if let Some(systemd) = &keeper.systemd {
        // After an upgrade whose new image failed, the previous binary
        // carries on under the pid of the one that watched the upgrade.
        let ready = format!("READY=1\nMAINPID={}", std::process::id());
        if let Err(err) = systemd.send(&ready, &[]) {
            keeper.log(format_args!("{err}"));
        }
    }
    keeper.log(format_args!(
        "holding {} fd(s) at {}",
        holder.len(),
        settings.socket
    ));
    let mut server = server(listener, holder, &keeper, &settings);
    if let Some(handover) = handover {
        hand_over(&handover, &keeper);
    }
    loop {
        match server.run_until(signals.next()).await {
            Asked::Exit(signal) => keeper.exit(signal),
            Asked::Upgrade => {
                let failure;
                (server, failure) =
                    upgrade::upgrade(server, &mut signals, &keeper, &settings).await;
                keeper.log(format_args!("not upgraded, serving on: {failure}"));
            }
        }
    }
}

/// The server of `listener` and `holder`, with the keeper as its hooks.
pub fn server(
    listener: tokio::net::UnixListener,
    holder: Holder<System>,
    keeper: &Arc<Keeper>,
    settings: &Settings,
) -> Server {
    let max_connections = raise_fd_limit()
        .saturating_sub(settings.max_names + 64)
        .max(16);
    let trust = PeerTrust::new()
        .allow_uids(settings.allow_uids.iter().copied())
        .allow_gids(settings.allow_gids.iter().copied());
    Server::new(listener)
        .with_holder(holder)
        .hooks(Hooked(keeper.clone()))
        .trust(trust)
        .client_timeout(settings.client_timeout)
        .max_connections(max_connections)
}

/// Tells the previous image, by one byte on `handover`, that this one
/// holds every fd and serves, so that it lets go; never waits.
fn hand_over(handover: &OwnedFd, keeper: &Keeper) {
    let said = rustix::fs::fcntl_setfl(handover, rustix::fs::OFlags::NONBLOCK)
        .and_then(|()| rustix::io::write(handover, b"1"));
    if let Err(err) = said {
        keeper.log(format_args!(
            "cannot tell the previous image it may let go: {err}"
        ));
    }
}

impl Keeper {
    pub fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.verbose {
            crate::output::message(format_args!("hold: {what}"));
        }
    }

    /// Tells systemd's fd store, if there is one, that `name` now holds
    /// `fd`, or nothing. No send waits: a systemd that does not read gives
    /// `WouldBlock`, which is logged, and the holder goes on. A failed
    /// message is not sent again later: a queue of them would grow for as
    /// long as systemd does not read, and every start (an upgrade too)
    /// stores each fd the holder holds again.
    fn to_systemd(&self, name: &str, fd: Option<BorrowedFd<'_>>) {
        let Some(systemd) = &self.systemd else {
            return;
        };
        if let Err(err) = systemd.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]) {
            self.log(format_args!("{err}"));
        } else if let Some(fd) = fd {
            self.keep_in_systemd(name, fd);
        }
    }

    /// Adds `fd` to systemd's fd store, if there is one, under `name`.
    pub fn keep_in_systemd(&self, name: &str, fd: BorrowedFd<'_>) {
        let Some(systemd) = &self.systemd else {
            return;
        };
        if let Err(err) = systemd.send(&format!("FDSTORE=1\nFDNAME={name}"), &[fd]) {
            self.log(format_args!("{err}"));
        }
    }

    /// Rewrites the state file with what `holder` holds.
    pub fn record(&self, holder: &Holder<System>) {
        let socket = self.socket_file.as_ref().map(|(_, identity)| *identity);
        if let Err(err) = self.state.write(&encode(socket, holder.entries())) {
            self.log(format_args!("cannot update the state file: {err}"));
        }
    }

    /// Exits, removing the socket file while it is still this holder's.
    /// Under systemd the file stays: the fd store may keep the socket for
    /// the next start.
    pub fn exit(&self, signal: &str) -> ! {
        if self.systemd.is_none() {
            if let Some((path, identity)) = &self.socket_file {
                if file_identity(path) == Some(*identity) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        self.log(format_args!("{signal}: exiting"));
        std::process::exit(0)
    }
}

/// The keeper as the server's hooks.
struct Hooked(Arc<Keeper>);

impl Hooks for Hooked {
    fn effect(&mut self, holder: &Holder<System>, effect: &Effect) {
        match effect {
            Effect::FdStore { name } => self.0.to_systemd(name, holder.fd(name).map(AsFd::as_fd)),
            Effect::Record => self.0.record(holder),
            Effect::Log(what) => self.0.log(format_args!("{what}")),
            _ => {}
        }
    }

    fn log(&mut self, message: &str) {
        self.0.log(format_args!("{message}"));
    }
}

/// Raises the soft limit on open fds to the hard one, for many clients
/// and names; returns the limit.
pub(super) fn raise_fd_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum.map(|max| max.min(1 << 20));
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let limit = getrlimit(Resource::Nofile);
    limit
        .current
        .map_or(1 << 20, |n| usize::try_from(n).unwrap_or(usize::MAX))
}
