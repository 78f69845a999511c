//! `fdpass hold`: keeps fds under names while the programs that use them
//! come and go, and loses none when it restarts.
//!
//! One thread runs an event loop (tokio's, on the current thread): each
//! client is a task with one deadline for its whole request, so a slow or
//! silent client holds up no other, and when connections run short the
//! oldest is dropped to make room. The peer's uid and gid are checked as
//! soon as it connects, before anything is read.
//!
//! What is held is recorded in a state file (a memfd, or an unlinked file
//! where there is none): every name with its metadata and lifetime,
//! rewritten on each change. It goes with the fds wherever they go: to the
//! next image on SIGHUP, laid out as `LISTEN_FDS` with the socket
//! (`fdpass-hold`) and the state file (`fdpass-hold-state`), and to
//! systemd's fd store, which hands them all back the same way after a
//! crash.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use io_fdpass::activation::ListenFds;
use io_fdpass::holder::protocol::{
    Entry, Lifetime, Progress, Refusal, RefusalKind, Request, RequestReader, GREETING,
};
use io_fdpass::notify::Notifier;
use io_fdpass::{FdKind, PeerCredentials};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::address::{file_identity, Access, SocketName};
use crate::cli::HoldArgs;
use crate::fail::{self, Failure, Result};

/// The name of the holder's own socket in `LISTEN_FDNAMES` and the fd
/// store.
pub const SOCKET_NAME: &str = "fdpass-hold";

/// The name of its state file there.
pub const STATE_NAME: &str = "fdpass-hold-state";

/// The first line of a state file.
const STATE_HEAD: &str = "fdpass-hold-state 1";

/// The longest state file read back.
const MAX_STATE: u64 = 64 << 20;

/// `fdpass hold`: serves until SIGTERM or SIGINT; on SIGHUP, executes
/// itself again with everything it holds.
pub fn run(args: &HoldArgs, verbose: bool) -> Result<()> {
    let settings = Settings::new(args, verbose)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::os("cannot start the event loop", err))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(settings))
}

/// What `hold`'s flags say, resolved.
struct Settings {
    socket: SocketName,
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    access: Access,
    max_names: usize,
    from: Option<SocketName>,
    client_timeout: Duration,
    verbose: bool,
    /// This binary, for SIGHUP, and the arguments it was started with.
    program: Option<PathBuf>,
    args: Vec<OsString>,
}

impl Settings {
    fn new(args: &HoldArgs, verbose: bool) -> Result<Settings> {
        if matches!(args.socket, SocketName::Abstract(_))
            && (args.mode.is_some() || args.group.is_some())
        {
            return Err(Failure::new(
                fail::USAGE,
                "an abstract socket name has no file, so no mode or group: the holder's uid and gid check is what protects it",
            ));
        }
        let allow_gids = args
            .allow_gids
            .iter()
            .map(|group| group_id(group))
            .collect::<Result<Vec<_>>>()?;
        let group = match &args.group {
            Some(group) => Some(group_id(group)?),
            None => allow_gids.first().copied(),
        };
        let mode = args.mode.unwrap_or_else(|| {
            let mut mode = 0o600;
            if !allow_gids.is_empty() {
                mode |= 0o060;
            }
            if !args.allow_uids.is_empty() || allow_gids.len() > 1 {
                mode |= 0o006;
            }
            mode
        });
        Ok(Settings {
            socket: args.socket.clone(),
            allow_uids: args.allow_uids.clone(),
            allow_gids,
            access: Access { mode, group },
            max_names: args.max_names,
            from: args.from.clone(),
            client_timeout: args.client_timeout,
            verbose,
            program: std::env::current_exe().ok(),
            args: std::env::args_os().collect(),
        })
    }
}

/// A group's id, from its number or its name.
fn group_id(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let unknown = || Failure::new(fail::USAGE, format!("there is no group named {group:?}"));
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    let mut entry = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut found: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: every pointer is valid for the call: the name is a C string,
    // `entry` and `found` are written by it, and `buf` is as long as passed.
    let err = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            entry.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut found,
        )
    };
    if err != 0 || found.is_null() {
        return Err(unknown());
    }
    // SAFETY: `found` is not null, so getgrnam_r filled `entry`.
    Ok(unsafe { entry.assume_init() }.gr_gid)
}

/// An fd held, and what is known of it.
struct Held {
    fd: OwnedFd,
    entry: Entry,
    /// Tells this fd from a later one stored under the same name.
    id: u64,
    /// The task that drops it when its lifetime ends.
    watch: Option<AbortHandle>,
}

/// The holder's state, shared by its tasks on the one thread.
struct Holder {
    settings: Settings,
    held: RefCell<BTreeMap<String, Held>>,
    next_id: Cell<u64>,
    state: StateFile,
    systemd: Option<Notifier>,
    /// The socket file and its identity, while it is this holder's.
    socket_file: Option<(PathBuf, (u64, u64))>,
    connections: RefCell<BTreeMap<u64, AbortHandle>>,
    ended: Notify,
    max_connections: usize,
}

async fn serve(settings: Settings) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let signal_failed = |err| Failure::os("cannot set up signal handling", err);
    let mut term = signal(SignalKind::terminate()).map_err(signal_failed)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_failed)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_failed)?;
    // A previous image blocked these for its exec; any that came since
    // are delivered now, to the handlers.
    signals::set_blocked(false).map_err(signal_failed)?;

    let max_connections = raise_fd_limit()
        .saturating_sub(settings.max_names + 64)
        .max(16);
    let (listener, holder) = Holder::start(settings, max_connections)?;
    listener
        .set_nonblocking(true)
        .map_err(|err| Failure::os("cannot set up the socket", err))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|err| Failure::os("cannot set up the socket", err))?;
    let holder = Rc::new(holder);
    holder.restore_lifetimes();
    if let Some(systemd) = &holder.systemd {
        if let Err(err) = systemd.send("READY=1", &[]) {
            holder.log(format_args!("{err}"));
        }
    }
    holder.log(format_args!(
        "holding {} fd(s) at {}",
        holder.held.borrow().len(),
        holder.settings.socket
    ));

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => holder.accepted(stream),
                Err(err) => {
                    // A connection gone before it was accepted, or a
                    // moment without fds: neither ends the holder.
                    holder.log(format_args!("accept failed: {err}"));
                    if err.kind() != ErrorKind::ConnectionAborted {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            _ = term.recv() => holder.exit("SIGTERM"),
            _ = int.recv() => holder.exit("SIGINT"),
            _ = hup.recv() => {
                let failure = holder.upgrade(listener.as_fd()).await;
                holder.log(format_args!("not upgraded, serving on: {failure}"));
            }
        }
    }
}

impl Holder {
    /// Sets up from what this process was given: the fds of `LISTEN_FDS`
    /// (its socket, its state file and held fds, from a previous image or
    /// systemd's fd store), or a new socket, then `--from`'s fds.
    fn start(
        settings: Settings,
        max_connections: usize,
    ) -> Result<(std::os::unix::net::UnixListener, Holder)> {
        let mut given =
            ListenFds::take().map_err(|err| Failure::new(fail::DATA, err.to_string()))?;
        let mut listener = None;
        let mut state = None;
        let mut adopted = Vec::new();
        for i in 0..given.len() {
            match given.name(i).unwrap_or_default().to_owned().as_str() {
                SOCKET_NAME => {
                    let socket = given
                        .take_unix_listener(i)
                        .map_err(|err| Failure::new(fail::DATA, format!("LISTEN_FDS: {err}")))?;
                    listener = Some(socket);
                }
                STATE_NAME => state = given.take_fd(i),
                name => {
                    if let Some(fd) = given.take_fd(i) {
                        adopted.push((name.to_owned(), fd));
                    }
                }
            }
        }
        let state = state.map(StateFile::adopt);
        let recorded = state.as_ref().and_then(StateFile::read);
        let socket_file = match (&settings.socket, &listener, &recorded) {
            // A socket file of this holder's: the one it made, or the one
            // a previous image recorded, while it is still there.
            (SocketName::Path(path), None, _) => Some(path.clone()),
            (SocketName::Path(path), Some(_), Some(recorded)) => recorded
                .socket
                .filter(|&identity| file_identity(path) == Some(identity))
                .map(|_| path.clone()),
            _ => None,
        };
        let listener = match listener {
            Some(listener) => listener,
            None => settings.socket.listen_as(Some(&settings.access))?.keep(),
        };
        let socket_file = socket_file.and_then(|path| file_identity(&path).map(|id| (path, id)));
        let state = match state {
            Some(state) => state,
            None => {
                StateFile::new().map_err(|err| Failure::os("cannot make the state file", err))?
            }
        };
        let systemd = Notifier::from_env();
        let holder = Holder {
            settings,
            held: RefCell::new(BTreeMap::new()),
            next_id: Cell::new(0),
            state,
            systemd,
            socket_file,
            connections: RefCell::new(BTreeMap::new()),
            ended: Notify::new(),
            max_connections,
        };
        let mut recorded = recorded.map(|r| r.entries).unwrap_or_default();
        for (name, fd) in adopted {
            if io_fdpass::holder::protocol::check_name(&name).is_err()
                || holder.held.borrow().contains_key(&name)
            {
                holder.log(format_args!(
                    "closed an fd given as {name:?}: a bad or repeated name"
                ));
                continue;
            }
            let entry = recorded
                .remove(&name)
                .unwrap_or_else(|| describe(&name, &fd));
            holder.insert(name, fd, entry);
        }
        if let Some(from) = &holder.settings.from {
            holder.take_over(from)?;
        }
        // Its own fds, then what it adopted or took over: stored again,
        // which systemd does not double, and never removed first, so that
        // a crash meanwhile loses nothing.
        holder.keep_in_systemd(SOCKET_NAME, listener.as_fd());
        holder.keep_in_systemd(STATE_NAME, holder.state.fd.as_fd());
        for (name, held) in holder.held.borrow().iter() {
            holder.keep_in_systemd(name, held.fd.as_fd());
        }
        holder.record();
        Ok((listener, holder))
    }

    /// `--from`: copies of every fd the holder at `from` holds, with its
    /// name and lifetime.
    fn take_over(&self, from: &SocketName) -> Result<()> {
        let client = crate::client::client(from, io_fdpass::holder::DEFAULT_TIMEOUT, &[]);
        let failed = |err: io::Error| crate::client::failure(from, &err);
        let entries = client.entries().map_err(failed)?;
        for batch in entries.chunks(io_fdpass::holder::protocol::MAX_FETCH) {
            let names: Vec<&str> = batch.iter().map(|e| e.name.as_str()).collect();
            let fds = client.fetch_many(&names).map_err(failed)?;
            for (entry, fd) in batch.iter().zip(fds) {
                self.insert(entry.name.clone(), fd, entry.clone());
            }
        }
        self.log(format_args!(
            "took over {} fd(s) from {from}",
            entries.len()
        ));
        Ok(())
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.settings.verbose {
            crate::output::message(format_args!("hold: {what}"));
        }
    }

    /// Takes a new connection: turns away a stranger at once, and makes
    /// room by dropping the oldest connection when there is none.
    fn accepted(self: &Rc<Self>, stream: UnixStream) {
        let peer = match io_fdpass::peer_credentials(&stream) {
            // Its pidfd is not needed, and closed now: not after the
            // connection, whose end tells the client the holder is done.
            Ok(mut peer) => {
                peer.pidfd = None;
                peer
            }
            Err(err) => {
                self.log(format_args!(
                    "turned away a client that cannot be identified: {err}"
                ));
                return;
            }
        };
        if let Err(refusal) = self.check_peer(&peer) {
            self.log(format_args!("turned away: {}", refusal.message));
            let _ = stream.try_write(refusal.line().as_bytes());
            return;
        }
        let mut connections = self.connections.borrow_mut();
        if connections.len() >= self.max_connections {
            if let Some((_, oldest)) = connections.pop_first() {
                oldest.abort();
                self.log(format_args!(
                    "{} connections open: dropped the oldest",
                    self.max_connections
                ));
            }
        }
        let id = self.next_id();
        let holder = self.clone();
        let task = tokio::task::spawn_local(async move {
            let timeout = holder.settings.client_timeout;
            match tokio::time::timeout(timeout, holder.serve_client(&stream, &peer)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => holder.log(format_args!("a client went away: {err}")),
                Err(_) => holder.log(format_args!(
                    "dropped a client of pid {:?} that took longer than {timeout:?}",
                    peer.pid
                )),
            }
            holder.connections.borrow_mut().remove(&id);
            holder.ended.notify_one();
        });
        connections.insert(id, task.abort_handle());
    }

    /// Serves this holder's user, root, and the uids and gids allowed.
    fn check_peer(&self, peer: &PeerCredentials) -> std::result::Result<(), Refusal> {
        let own = rustix::process::getuid().as_raw();
        let allowed = peer.uid == own
            || peer.uid == 0
            || self.settings.allow_uids.contains(&peer.uid)
            || self.settings.allow_gids.contains(&peer.gid);
        if allowed {
            return Ok(());
        }
        Err(Refusal::new(
            RefusalKind::Denied,
            format!(
                "uid {} (gid {}) may not use this holder: it serves uid {own}; start it with --allow-uid {} to allow",
                peer.uid, peer.gid, peer.uid
            ),
        ))
    }

    /// One client: the greeting, its request, the answer.
    async fn serve_client(
        self: &Rc<Self>,
        stream: &UnixStream,
        peer: &PeerCredentials,
    ) -> io::Result<()> {
        write_all(stream, GREETING.as_bytes(), &[]).await?;
        let mut reader = RequestReader::new();
        let mut buf = [0; 1024];
        let reply = loop {
            let room = reader.room().min(buf.len());
            let mut slot = [None];
            let got = io_fdpass::tokio::recv_fds(stream, &mut buf[..room], &mut slot).await?;
            if got.bytes == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the client closed the connection before the end of its request",
                ));
            }
            let [fd] = slot;
            match reader.received(
                &buf[..got.bytes],
                fd,
                got.fds_discarded > 0,
                got.control_truncated,
            ) {
                Progress::More => {}
                Progress::Done(request, fd) => break self.answer(request, fd, peer),
                Progress::Refused(refusal) => break Err(refusal),
            }
        };
        match reply {
            Ok((text, fds)) => {
                let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
                write_all(stream, text.as_bytes(), &fds).await
            }
            Err(refusal) => {
                self.log(format_args!("refused: {}", refusal.message));
                write_all(stream, refusal.line().as_bytes(), &[]).await
            }
        }
    }

    /// Carries out a request: the answer's text and fds, or a refusal.
    fn answer(
        self: &Rc<Self>,
        request: Request,
        fd: Option<OwnedFd>,
        peer: &PeerCredentials,
    ) -> std::result::Result<(String, Vec<OwnedFd>), Refusal> {
        let ok = "ok\n".to_owned();
        match (request, fd) {
            (Request::Store { name, lifetime }, Some(fd)) => {
                self.store(name, fd, lifetime, peer)?;
                Ok((ok, Vec::new()))
            }
            (Request::Fetch { names, take }, None) => {
                let fds = self.fetch(&names, take)?;
                Ok((ok, fds))
            }
            (Request::List, None) => {
                let mut text = ok;
                for held in self.held.borrow().values() {
                    text.push_str(&held.entry.line());
                }
                Ok((text, Vec::new()))
            }
            (Request::Remove { name }, None) => {
                if self.remove(&name).is_none() {
                    return Err(not_held(&name));
                }
                self.log(format_args!("dropped {name}"));
                Ok((ok, Vec::new()))
            }
            // The reader lets an fd come only with a store, and a store
            // only with one.
            (_, _) => Err(Refusal::invalid(
                "only store comes with an fd, and store always",
            )),
        }
    }

    fn store(
        self: &Rc<Self>,
        name: String,
        fd: OwnedFd,
        lifetime: Lifetime,
        peer: &PeerCredentials,
    ) -> std::result::Result<(), Refusal> {
        if name == SOCKET_NAME || name == STATE_NAME {
            return Err(Refusal::invalid(format!(
                "{name} is the holder's own name in the fd store; choose another"
            )));
        }
        let held = self.held.borrow().len();
        if !self.held.borrow().contains_key(&name) && held >= self.settings.max_names {
            return Err(Refusal::new(
                RefusalKind::Full,
                format!("it holds {held} names, its limit (--max-names); drop one first"),
            ));
        }
        if let Some(pid) = lifetime.until_exit {
            if !alive(pid) {
                return Err(Refusal::new(
                    RefusalKind::NotFound,
                    format!("there is no process {pid} to keep {name} until the exit of"),
                ));
            }
        }
        let now = unix_now();
        let mut entry = describe(&name, &fd);
        entry.stored_by_uid = Some(peer.uid);
        entry.stored_by_pid = peer.pid;
        entry.stored_at = Some(now.as_secs());
        entry.expires_at = lifetime
            .ttl
            .map(|ttl| (now + ttl).as_secs() + u64::from((now + ttl).subsec_nanos() > 0));
        entry.until_exit = lifetime.until_exit;
        let ttl = lifetime.ttl;
        self.to_systemd(&name, Some(fd.as_fd()));
        let id = self.insert(name.clone(), fd, entry);
        self.watch(&name, id, ttl);
        self.record();
        self.log(format_args!("stored {name}"));
        Ok(())
    }

    fn fetch(&self, names: &[String], take: bool) -> std::result::Result<Vec<OwnedFd>, Refusal> {
        let mut fds = Vec::with_capacity(names.len());
        {
            let held = self.held.borrow();
            for name in names {
                let fd = &held.get(name).ok_or_else(|| not_held(name))?.fd;
                fds.push(fd.try_clone().map_err(|err| {
                    Refusal::new(
                        if err.raw_os_error() == Some(libc::EMFILE) {
                            RefusalKind::Full
                        } else {
                            RefusalKind::Failed
                        },
                        format!("cannot copy the fd named {name}: {err}"),
                    )
                })?);
            }
        }
        if take {
            for name in names {
                self.forget(name);
            }
            self.record();
        }
        self.log(format_args!(
            "{} {}",
            if take { "took" } else { "fetched" },
            names.join(" ")
        ));
        Ok(fds)
    }

    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Holds `fd` under `name`, replacing what was there; returns its id.
    fn insert(&self, name: String, fd: OwnedFd, entry: Entry) -> u64 {
        let id = self.next_id();
        let replaced = self.held.borrow_mut().insert(
            name,
            Held {
                fd,
                entry,
                id,
                watch: None,
            },
        );
        if let Some(watch) = replaced.and_then(|old| old.watch) {
            watch.abort();
        }
        id
    }

    /// Stops holding `name`, here and in systemd's fd store.
    fn remove(&self, name: &str) -> Option<OwnedFd> {
        let fd = self.forget(name)?;
        self.record();
        Some(fd)
    }

    /// Stops holding `name`, here and in systemd's fd store, leaving the
    /// state file to the caller: a take of many names rewrites it once.
    fn forget(&self, name: &str) -> Option<OwnedFd> {
        let held = self.held.borrow_mut().remove(name)?;
        if let Some(watch) = held.watch {
            watch.abort();
        }
        self.to_systemd(name, None);
        Some(held.fd)
    }

    /// Starts the watch of every held fd with a lifetime, after a start
    /// from what was given.
    fn restore_lifetimes(self: &Rc<Self>) {
        let now = unix_now();
        let watched: Vec<(String, u64, Option<Duration>)> = self
            .held
            .borrow()
            .iter()
            .filter(|(_, h)| h.entry.expires_at.is_some() || h.entry.until_exit.is_some())
            .map(|(name, h)| {
                let ttl = h
                    .entry
                    .expires_at
                    .map(|at| Duration::from_secs(at).saturating_sub(now));
                (name.clone(), h.id, ttl)
            })
            .collect();
        for (name, id, ttl) in watched {
            self.watch(&name, id, ttl);
        }
    }

    /// Drops `name` (while it is still fd `id`) after `ttl`, or when the
    /// process it is kept for exits.
    fn watch(self: &Rc<Self>, name: &str, id: u64, ttl: Option<Duration>) {
        let Some(until_exit) = self
            .held
            .borrow()
            .get(name)
            .map(|held| held.entry.until_exit)
        else {
            return;
        };
        if ttl.is_none() && until_exit.is_none() {
            return;
        }
        let exit = until_exit.map(Exit::watch);
        let holder = self.clone();
        let watched = name.to_owned();
        let task = tokio::task::spawn_local(async move {
            let why = lifetime_end(ttl, exit).await;
            let current = holder.held.borrow().get(&watched).map(|h| h.id);
            if current == Some(id) {
                holder.remove(&watched);
                holder.log(format_args!("dropped {watched}: {why}"));
            }
        });
        if let Some(held) = self.held.borrow_mut().get_mut(name) {
            held.watch = Some(task.abort_handle());
        }
    }

    /// Tells systemd's fd store, if there is one, that `name` now holds
    /// `fd`, or nothing.
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
    fn keep_in_systemd(&self, name: &str, fd: BorrowedFd<'_>) {
        let Some(systemd) = &self.systemd else {
            return;
        };
        if let Err(err) = systemd.send(&format!("FDSTORE=1\nFDNAME={name}"), &[fd]) {
            self.log(format_args!("{err}"));
        }
    }

    /// Rewrites the state file.
    fn record(&self) {
        let held = self.held.borrow();
        let entries = held.values().map(|held| &held.entry);
        let socket = self.socket_file.as_ref().map(|(_, identity)| *identity);
        if let Err(err) = self.state.write(socket, entries) {
            self.log(format_args!("cannot update the state file: {err}"));
        }
    }

    /// Exits, removing the socket file while it is still this holder's.
    /// Under systemd the file stays: the fd store may keep the socket for
    /// the next start.
    fn exit(&self, signal: &str) -> ! {
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

    /// SIGHUP: stops accepting (new clients wait in the socket's backlog),
    /// lets the clients being served finish, checks that the binary runs,
    /// and executes it with every fd. Returns only if it could not.
    async fn upgrade(&self, listener: BorrowedFd<'_>) -> Failure {
        loop {
            let ended = self.ended.notified();
            if self.connections.borrow().is_empty() {
                break;
            }
            ended.await;
        }
        let Some(program) = self.settings.program.clone() else {
            return Failure::new(fail::OS, "the path of this binary is not known");
        };
        if let Err(failure) = runs(&program) {
            return failure;
        }
        self.log(format_args!(
            "SIGHUP: executing {} again",
            program.display()
        ));
        let mut fds = Vec::new();
        let mut names = Vec::new();
        for (name, fd) in [(SOCKET_NAME, listener), (STATE_NAME, self.state.fd.as_fd())] {
            match fd.try_clone_to_owned() {
                Ok(fd) => fds.push(fd),
                Err(err) => return Failure::os("cannot copy an fd for the next image", err),
            }
            names.push(name.to_owned());
        }
        self.record();
        let held = std::mem::take(&mut *self.held.borrow_mut());
        for (name, held) in held {
            fds.push(held.fd);
            names.push(name);
        }
        if let Err(err) = signals::set_blocked(true) {
            return Failure::os("cannot block signals for the exec", err);
        }
        // From here on the fds are being laid out over whatever this
        // process had at 3, 4, …, the event loop's among them: a failure
        // leaves nothing to go on with.
        let failure = crate::exec::exec_with_fds(fds, &names, &program, &self.settings.args, &[]);
        crate::output::message(format_args!("hold: cannot execute itself again: {failure}"));
        std::process::exit(i32::from(fail::OS))
    }
}

/// Why a held fd's lifetime ends: the time is up, or the process exited.
async fn lifetime_end(ttl: Option<Duration>, exit: Option<Exit>) -> String {
    let time_up = async {
        match ttl {
            Some(ttl) => tokio::time::sleep(ttl).await,
            None => std::future::pending().await,
        }
    };
    let exited = async {
        match exit {
            Some(exit) => exit.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = time_up => "its time is up".to_owned(),
        pid = exited => format!("process {pid} exited"),
    }
}

/// The exit of a process: its pidfd where there are pidfds, else its pid,
/// looked at every second.
enum Exit {
    Pidfd(u32, tokio::io::unix::AsyncFd<OwnedFd>),
    Pid(u32),
}

impl Exit {
    fn watch(pid: u32) -> Exit {
        let pidfd = io_fdpass::process::Process::open(pid)
            .and_then(|process| process.as_fd().try_clone_to_owned());
        // SAFETY: an OwnedFd is one open fd for as long as it lives, and
        // the AsyncFd owns it.
        match pidfd.map(|pidfd| unsafe { tokio::io::unix::AsyncFd::register(pidfd) }) {
            Ok(Ok(pidfd)) => Exit::Pidfd(pid, pidfd),
            _ => Exit::Pid(pid),
        }
    }

    async fn wait(self) -> u32 {
        match self {
            Exit::Pidfd(pid, pidfd) => {
                let _ = pidfd.readable().await;
                pid
            }
            Exit::Pid(pid) => {
                while alive(pid) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                pid
            }
        }
    }
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// What `fd` is, as a `list` entry named `name`.
fn describe(name: &str, fd: &OwnedFd) -> Entry {
    match FdKind::of(fd) {
        Ok(kind) => Entry::describe(name, &kind),
        Err(_) => Entry::describe(name, &FdKind::Other(None)),
    }
}

fn not_held(name: &str) -> Refusal {
    Refusal::new(
        RefusalKind::NotFound,
        format!("it holds no fd named {name}"),
    )
}

/// The time since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes all of `bytes` to the client, with `fds` attached to the first.
async fn write_all(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut sent = io_fdpass::tokio::send_fds(stream, bytes, fds).await?;
    while sent < bytes.len() {
        stream.writable().await?;
        match stream.try_write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Checks that `program` runs, by asking it its version, so that a broken
/// upgrade is found before the exec it could not come back from.
fn runs(program: &Path) -> Result<()> {
    let mut child = std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|err| {
            Failure::new(
                fail::CANNOT_EXECUTE,
                format!("cannot run {}: {err}", program.display()),
            )
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Failure::new(
                    fail::CANNOT_EXECUTE,
                    format!("{} --version failed ({status})", program.display()),
                ))
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::new(
                    fail::CANNOT_EXECUTE,
                    format!("{} --version did not finish", program.display()),
                ));
            }
        }
    }
}

/// Raises the soft limit on open fds to the hard one, for many clients
/// and names; returns the limit.
fn raise_fd_limit() -> usize {
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

/// The record of what is held, shared with the next image and with
/// systemd's fd store: one open file, rewritten in place on each change,
/// so every copy of the fd sees the latest. A text of `list` entries
/// between a head line and an `end COUNT` line; one cut short by a crash
/// is ignored as a whole.
struct StateFile {
    fd: OwnedFd,
}

/// What a state file says.
struct Recorded {
    socket: Option<(u64, u64)>,
    entries: BTreeMap<String, Entry>,
}

impl StateFile {
    fn new() -> io::Result<StateFile> {
        Ok(StateFile {
            fd: anonymous_file()?,
        })
    }

    fn adopt(fd: OwnedFd) -> StateFile {
        StateFile { fd }
    }

    fn write<'a>(
        &self,
        socket: Option<(u64, u64)>,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> io::Result<()> {
        let mut text = format!("{STATE_HEAD}\n");
        if let Some((dev, ino)) = socket {
            text.push_str(&format!("socket {dev} {ino}\n"));
        }
        let mut count = 0;
        for entry in entries {
            text.push_str(&entry.line());
            count += 1;
        }
        text.push_str(&format!("end {count}\n"));
        let mut written = 0;
        while written < text.len() {
            written += rustix::io::pwrite(&self.fd, &text.as_bytes()[written..], written as u64)?;
        }
        rustix::fs::ftruncate(&self.fd, text.len() as u64)?;
        Ok(())
    }

    fn read(&self) -> Option<Recorded> {
        let mut bytes = Vec::new();
        let mut chunk = [0; 64 * 1024];
        loop {
            let n = rustix::io::pread(&self.fd, &mut chunk, bytes.len() as u64).ok()?;
            if n == 0 || bytes.len() as u64 > MAX_STATE {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        parse_state(std::str::from_utf8(&bytes).ok()?)
    }
}

/// Parses a state file's text; `None` unless it is whole.
fn parse_state(text: &str) -> Option<Recorded> {
    let mut lines = text.lines();
    if lines.next()? != STATE_HEAD {
        return None;
    }
    let mut recorded = Recorded {
        socket: None,
        entries: BTreeMap::new(),
    };
    for line in lines {
        if let Some(count) = line.strip_prefix("end ") {
            return (count.parse() == Ok(recorded.entries.len())).then_some(recorded);
        }
        if let Some(identity) = line.strip_prefix("socket ") {
            let (dev, ino) = identity.split_once(' ')?;
            recorded.socket = Some((dev.parse().ok()?, ino.parse().ok()?));
            continue;
        }
        let entry = Entry::parse(line).ok()?;
        recorded.entries.insert(entry.name.clone(), entry);
    }
    None
}

/// A close-on-exec file with no name: a memfd, or where there is none an
/// unlinked file in the temporary directory.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn anonymous_file() -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        STATE_NAME,
        rustix::fs::MemfdFlags::CLOEXEC,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn anonymous_file() -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    for attempt in 0..100 {
        let path =
            std::env::temp_dir().join(format!(".{STATE_NAME}-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file.into());
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        "no free name for a temporary file",
    ))
}

/// Blocking the signals the holder handles, around its exec.
mod signals {
    use std::io;
    use std::mem::MaybeUninit;

    /// Blocks (or unblocks) SIGTERM, SIGINT and SIGHUP in this thread, the
    /// only one. Blocked signals stay pending across an exec, to be
    /// delivered once the next image has its handlers and unblocks them.
    pub fn set_blocked(blocked: bool) -> io::Result<()> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let how = if blocked {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        // SAFETY: sigemptyset initialises the set; sigaddset and
        // pthread_sigmask read and change only that set and this thread's
        // mask.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            let set = set.assume_init();
            match libc::pthread_sigmask(how, &raw const set, std::ptr::null_mut()) {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_are_whole_or_ignored() {
        let entry = Entry::parse("web kind=tcp%20listener uid=1 stored=5 expires=9").unwrap();
        let file = StateFile::new().unwrap();
        file.write(Some((1, 2)), [&entry].into_iter()).unwrap();
        let recorded = file.read().unwrap();
        assert_eq!(recorded.socket, Some((1, 2)));
        assert_eq!(recorded.entries["web"], entry);
        // A shorter write leaves no tail of the longer one behind.
        file.write(None, std::iter::empty()).unwrap();
        let recorded = file.read().unwrap();
        assert!(recorded.entries.is_empty() && recorded.socket.is_none());

        let whole = format!("{STATE_HEAD}\n{}end 1\n", entry.line());
        assert!(parse_state(&whole).is_some());
        for cut in [
            String::new(),
            format!("{STATE_HEAD}\n{}", entry.line()),
            format!("{STATE_HEAD}\n{}end 2\n", entry.line()),
            format!("{STATE_HEAD}\nweb kind=%4\nend 1\n"),
            "fdpass-hold-state 2\nend 0\n".to_owned(),
        ] {
            assert!(parse_state(&cut).is_none(), "{cut:?}");
        }
    }
}
