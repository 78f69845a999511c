//! What the holder starts from: the fds of `LISTEN_FDS` (its socket, its
//! state file and the fds held, from a previous image or systemd's fd
//! store), or a new socket; then `--from`'s fds.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use io_fdpass::activation::ListenFds;
use io_fdpass::holder::machine::{SOCKET_NAME, STATE_NAME};
use io_fdpass::holder::protocol::{Request, MAX_FETCH};
use io_fdpass::holder::state_file::Recorded;
use io_fdpass::holder::{Caller, Holder, System};
use io_fdpass::notify::Notifier;

use super::serve::Keeper;
use super::state_file::StateFile;
use super::Settings;
use crate::address::{file_identity, SocketName};
use crate::fail::{self, Failure, Result};

/// What this process was given as `LISTEN_FDS`, by name.
#[derive(Default)]
struct Given {
    listener: Option<UnixListener>,
    state: Option<OwnedFd>,
    held: Vec<(String, OwnedFd)>,
}

/// Sets up the socket, the holder with what it was given, and the keeper
/// of its state file and fd store, both brought up to date.
pub fn start(settings: &Settings) -> Result<(UnixListener, Holder<System>, Keeper)> {
    let given = given()?;
    let state = given.state.map(StateFile::adopt);
    let recorded = state.as_ref().and_then(StateFile::read);
    let socket_file = socket_file(settings, given.listener.is_some(), recorded.as_ref());
    let (listener, made) = match given.listener {
        Some(listener) => (listener, None),
        None => {
            let listening = settings.socket.listen_as(Some(&settings.access))?;
            let made = listening.identity();
            (listening.keep(), made)
        }
    };
    // The identity of a file made here is the one seen where no other user
    // could swap it, not what the path shows now.
    let socket_file =
        socket_file.and_then(|path| made.or_else(|| file_identity(&path)).map(|id| (path, id)));
    let state = match state {
        Some(state) => state,
        None => StateFile::new().map_err(|err| Failure::os("cannot make the state file", err))?,
    };
    let keeper = Keeper {
        state,
        systemd: Notifier::from_env(),
        socket_file,
        verbose: settings.verbose,
    };
    let mut holder = Holder::new(System, settings.max_names);
    let mut recorded = recorded.map(|r| r.entries).unwrap_or_default();
    for (name, fd) in given.held {
        let entry = recorded.remove(&name);
        if let Err(refusal) = holder.adopt(name, fd, entry) {
            keeper.log(format_args!("{}", refusal.message));
        }
    }
    if let Some(from) = &settings.from {
        take_over(&mut holder, from, &keeper)?;
    }
    // Its own fds, then what it adopted or took over: stored again, which
    // systemd does not double, and never removed first, so that a crash
    // meanwhile loses nothing.
    keeper.keep_in_systemd(SOCKET_NAME, listener.as_fd());
    keeper.keep_in_systemd(STATE_NAME, keeper.state.fd.as_fd());
    for entry in holder.entries() {
        if let Some(fd) = holder.fd(&entry.name) {
            keeper.keep_in_systemd(&entry.name, fd.as_fd());
        }
    }
    keeper.record(&holder);
    Ok((listener, holder, keeper))
}

/// The fds of `LISTEN_FDS`, sorted by name.
fn given() -> Result<Given> {
    let mut fds = ListenFds::take().map_err(|err| Failure::new(fail::DATA, err.to_string()))?;
    let mut given = Given::default();
    for i in 0..fds.len() {
        match fds.name(i).unwrap_or_default().to_owned().as_str() {
            SOCKET_NAME => {
                let socket = fds
                    .take_unix_listener(i)
                    .map_err(|err| Failure::new(fail::DATA, format!("LISTEN_FDS: {err}")))?;
                given.listener = Some(socket);
            }
            STATE_NAME => given.state = fds.take_fd(i),
            name => {
                if let Some(fd) = fds.take_fd(i) {
                    given.held.push((name.to_owned(), fd));
                }
            }
        }
    }
    Ok(given)
}

/// The socket file of this holder's: the one it makes, or the one a
/// previous image recorded, while it is still there.
fn socket_file(settings: &Settings, given: bool, recorded: Option<&Recorded>) -> Option<PathBuf> {
    let SocketName::Path(path) = &settings.socket else {
        return None;
    };
    if !given {
        return Some(path.clone());
    }
    recorded?
        .socket
        .filter(|&identity| file_identity(path) == Some(identity))
        .map(|_| path.clone())
}

/// `--from`: copies of every fd the holder at `from` holds, with its name
/// and lifetime, each replacing what was given under its name.
fn take_over(holder: &mut Holder<System>, from: &SocketName, keeper: &Keeper) -> Result<()> {
    let client = crate::client::client(from, io_fdpass::holder::DEFAULT_TIMEOUT, &[]);
    let failed = |err: io::Error| crate::client::failure(from, &err);
    let entries = client.entries().map_err(failed)?;
    for batch in entries.chunks(MAX_FETCH) {
        let names: Vec<&str> = batch.iter().map(|e| e.name.as_str()).collect();
        let fds = client.fetch_many(&names).map_err(failed)?;
        for (entry, fd) in batch.iter().zip(fds) {
            if holder.fd(&entry.name).is_some() {
                let name = entry.name.clone();
                let now = io_fdpass::holder::unix_now();
                drop(holder.handle(Request::Drop { name }, None, Caller::default(), now));
            }
            if let Err(refusal) = holder.adopt(entry.name.clone(), fd, Some(entry.clone())) {
                keeper.log(format_args!("{}", refusal.message));
            }
        }
    }
    keeper.log(format_args!(
        "took over {} fd(s) from {from}",
        entries.len()
    ));
    Ok(())
}
