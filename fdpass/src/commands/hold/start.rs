//! What the holder starts from: the fds of `LISTEN_FDS` (its socket, its
//! state file and the fds held, from a previous image or systemd's fd
//! store), or a new socket; then, on a first start only, `--from`'s fds.
//!
//! The fds of `LISTEN_FDS` are taken before anything else in the process
//! opens one ([`given`]): a number counted there but not passed is closed
//! then, and left out, where later it could be the event loop's own, held
//! under a name and closed by a `drop`.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use io_fdpass::activation::ListenFds;
use io_fdpass::holder::machine::{is_reserved, HANDOVER_NAME, SOCKET_NAME, STATE_NAME};
use io_fdpass::holder::protocol::{Entry, MAX_FETCH};
use io_fdpass::holder::state_file::Recorded;
use io_fdpass::holder::{Holder, System};
use io_fdpass::notify::Notifier;

use super::serve::Keeper;
use super::state_file::StateFile;
use super::Settings;
use crate::address::{file_identity, SocketName};
use crate::fail::{self, Failure, Result};

/// What this process was given as `LISTEN_FDS`, by name.
#[derive(Default)]
pub struct Given {
    listener: Option<UnixListener>,
    state: Option<OwnedFd>,
    /// Where the previous image waits to hear that this one took over.
    handover: Option<OwnedFd>,
    held: Vec<(String, OwnedFd)>,
    /// The names `LISTEN_FDS` counts whose fds were not open.
    not_open: Vec<String>,
}

/// Sets up the socket, the holder with what it was given, and the keeper
/// of its state file and fd store, both brought up to date.
pub fn start(settings: &Settings, given: Given) -> Result<(UnixListener, Holder<System>, Keeper)> {
    // A state of its own (a previous image's, or systemd's fd store's)
    // began with `--from` already applied: applied again, it would undo
    // every store and drop since, and fail with everything if that holder
    // has stopped.
    let resumed = given.state.is_some() || !given.held.is_empty();
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
        handover: given.handover,
    };
    for name in &given.not_open {
        keeper.log(format_args!(
            "LISTEN_FDS counts an fd named {name:?} that is not open: nothing is held under it"
        ));
    }
    let mut holder = Holder::new(System, settings.max_names);
    let mut recorded = recorded.map(|r| r.entries).unwrap_or_default();
    for (name, fd) in given.held {
        let entry = recorded.remove(&name);
        if let Err(refusal) = holder.adopt(name, fd, entry) {
            keeper.log(format_args!("{}", refusal.message));
        }
    }
    match &settings.from {
        Some(from) if resumed => keeper.log(format_args!(
            "not taking over from {from} again: started with what a previous image held"
        )),
        Some(from) => take_over(&mut holder, from, &keeper)?,
        None => {}
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

/// The fds of `LISTEN_FDS`, sorted by name: taken before this process
/// opens any fd of its own, and only those that are open.
pub fn given() -> Result<Given> {
    let mut fds =
        ListenFds::take_open().map_err(|err| Failure::new(fail::DATA, err.to_string()))?;
    let mut given = Given::default();
    for i in 0..fds.len() {
        let name = fds.name(i).unwrap_or_default().to_owned();
        if name == SOCKET_NAME {
            match fds.take_unix_listener(i) {
                Ok(socket) => given.listener = Some(socket),
                Err(err) if err.kind() == ErrorKind::NotFound => given.not_open.push(name),
                Err(err) => return Err(Failure::new(fail::DATA, format!("LISTEN_FDS: {err}"))),
            }
            continue;
        }
        match fds.take_fd(i) {
            None => given.not_open.push(name),
            Some(fd) if name == STATE_NAME => given.state = Some(fd),
            Some(fd) if name == HANDOVER_NAME => given.handover = Some(fd),
            Some(fd) => given.held.push((name, fd)),
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
/// and lifetime. A name that no held fd may take (a holder's own, one
/// that breaks the rules, one listed twice) is not even fetched: it is
/// logged and left out, and the rest are taken over.
fn take_over(holder: &mut Holder<System>, from: &SocketName, keeper: &Keeper) -> Result<()> {
    let client = crate::client::client(from, io_fdpass::holder::DEFAULT_TIMEOUT, &[]);
    let failed = |err: io::Error| crate::client::failure(from, &err);
    let mut seen = BTreeSet::new();
    let entries: Vec<Entry> = client
        .entries()
        .map_err(failed)?
        .into_iter()
        .filter(|entry| {
            let why = if let Err(err) = io_fdpass::notify::check_name(&entry.name) {
                err.to_string()
            } else if is_reserved(&entry.name) {
                "it is the holder's own name".to_owned()
            } else if !seen.insert(entry.name.clone()) {
                "it is listed twice".to_owned()
            } else {
                return true;
            };
            keeper.log(format_args!(
                "{from} lists {:?}, not taken over: {why}",
                entry.name
            ));
            false
        })
        .collect();
    let mut taken = 0;
    for batch in entries.chunks(MAX_FETCH) {
        let names: Vec<&str> = batch.iter().map(|e| e.name.as_str()).collect();
        let fds = client.fetch_many(&names).map_err(failed)?;
        for (entry, fd) in batch.iter().zip(fds) {
            match holder.adopt(entry.name.clone(), fd, Some(entry.clone())) {
                Ok(_) => taken += 1,
                Err(refusal) => keeper.log(format_args!("{}", refusal.message)),
            }
        }
    }
    keeper.log(format_args!("took over {taken} fd(s) from {from}"));
    Ok(())
}
