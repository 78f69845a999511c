//! A holder inside a Rust program: a [`Holder`] served on a tokio
//! [`UnixListener`], the same server side that `fdpass hold` runs.
//!
//! [`UnixListener`]: https://docs.rs/tokio/1/tokio/net/struct.UnixListener.html

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::codec::{commit_received, Progress, RequestReader, GREETING};
use super::machine::{Answer, Caller, Effect, Holder, Reservation};
use super::protocol::{Refusal, RefusalKind};
use super::{System, DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_NAMES};
use crate::{PeerCredentials, PeerTrust};

/// How many fds a holder keeps free for its own use, besides those it
/// holds: its event loop, its connections, the copies it sends, and the
/// pidfds that watch the processes of names kept until they exit (at most
/// [`MAX_PIDFD_WATCHES`]).
pub const FD_RESERVE: usize = 64;

/// How many processes a [`Server`] watches by their pidfd at most; past
/// that, a process is looked at every second (`kill(pid, 0)`), so that
/// names kept until their process exits leave the fds in reserve that
/// answering needs.
pub const MAX_PIDFD_WATCHES: usize = 16;

/// The most names a holder allowed `fd_limit` open fds (`RLIMIT_NOFILE`)
/// can hold and still answer: half of what is left after
/// [`FD_RESERVE`], so that a copy of each can be made (a fetch of all of
/// them, an upgrade that lays them out again), and at least one.
#[must_use]
pub fn max_names_within(fd_limit: usize) -> usize {
    (fd_limit.saturating_sub(FD_RESERVE) / 2).max(1)
}

/// How many connections a [`Server`] serves at once unless told; past
/// that the oldest is dropped to make room.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// What a program running a [`Server`] adds to it: the [`Effect`]s the
/// server does not carry out itself (it starts and stops the watches and
/// the timer), and its log. Each is called with the server's lock held,
/// right after the decision, so keep them short and never block.
pub trait Hooks: Send + 'static {
    /// Carries out `effect` ([`Effect::FdStore`], [`Effect::Record`],
    /// [`Effect::Log`], …) with `holder` as it is now. Does nothing unless
    /// implemented.
    fn effect(&mut self, holder: &Holder<System>, effect: &Effect) {
        let _ = (holder, effect);
    }

    /// Notes what the server did: a client turned away, gone, too slow.
    /// Does nothing unless implemented.
    fn log(&mut self, message: &str) {
        let _ = message;
    }
}

/// No hooks: nothing is logged, there is no fd store or state file.
impl Hooks for () {}

/// A holder serving clients on a unix socket, with tokio: one task per
/// client, with one deadline for its whole request; lifetimes kept by a
/// timer and by watching each process (its pidfd where there are pidfds,
/// for up to [`MAX_PIDFD_WATCHES`] processes at once, else `kill(pid, 0)`
/// every second). Tasks are spawned on the current tokio runtime, and all
/// ended when the server is dropped.
///
/// Each client's uid and gid are checked as soon as it connects, before
/// anything is read: it is served if it runs as this process's user, as
/// root, or as a uid or in a gid allowed. Others get a refusal and the
/// connection closes.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use io_fdpass::holder::Server;
///
/// let listener = tokio::net::UnixListener::bind("/run/user/1000/fds.sock")?;
/// let stop = tokio::signal::ctrl_c();
/// Server::new(listener).run_until(stop).await?;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: UnixListener,
    tasks: Tasks,
    client_timeout: Duration,
    trust: PeerTrust,
    max_connections: usize,
    started: bool,
    /// An fd kept open to be closed when `accept` runs out of fds, so that
    /// the client can still be accepted and told the holder is full.
    spare: Option<OwnedFd>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("held", &self.tasks.0.lock().holder.len())
            .finish_non_exhaustive()
    }
}

/// What the server's tasks share.
struct Shared {
    inner: Mutex<Inner>,
    /// A connection has ended.
    ended: Notify,
    /// The next expiry may have changed.
    expiry: Notify,
    /// How many watches have a pidfd open, at most [`MAX_PIDFD_WATCHES`].
    pidfds: AtomicUsize,
}

struct Inner {
    holder: Holder<System>,
    hooks: Box<dyn Hooks>,
    watches: BTreeMap<u64, AbortHandle>,
    connections: BTreeMap<u64, AbortHandle>,
    next_connection: u64,
    timer: Option<AbortHandle>,
}

/// The server's tasks, ended when it is dropped.
struct Tasks(Arc<Shared>);

impl Drop for Tasks {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        let watches = std::mem::take(&mut inner.watches);
        let connections = std::mem::take(&mut inner.connections);
        for task in watches.into_values().chain(connections.into_values()) {
            task.abort();
        }
        if let Some(timer) = inner.timer.take() {
            timer.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A task that panicked left the holder's state whole: every
        // change is made between two locks, and none panics halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Server {
    /// A server on `listener` of a holder that holds nothing yet, and at
    /// most [`DEFAULT_MAX_NAMES`] names.
    #[must_use]
    pub fn new(listener: UnixListener) -> Server {
        let inner = Inner {
            holder: Holder::new(System, DEFAULT_MAX_NAMES),
            hooks: Box::new(()),
            watches: BTreeMap::new(),
            connections: BTreeMap::new(),
            next_connection: 0,
            timer: None,
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            ended: Notify::new(),
            expiry: Notify::new(),
            pidfds: AtomicUsize::new(0),
        });
        Server {
            listener,
            tasks: Tasks(shared),
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            trust: PeerTrust::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            started: false,
            spare: spare_fd(),
        }
    }

    /// Serves `holder`, with what it holds and its limit on names,
    /// instead of an empty one.
    #[must_use]
    pub fn with_holder(self, holder: Holder<System>) -> Server {
        self.tasks.0.lock().holder = holder;
        self
    }

    /// Carries out the effects the server does not, and logs, with
    /// `hooks`.
    #[must_use]
    pub fn hooks(self, hooks: impl Hooks) -> Server {
        self.tasks.0.lock().hooks = Box::new(hooks);
        self
    }

    /// Serves the clients `trust` trusts: by default this process's user
    /// and root ([`PeerTrust::new`]).
    #[must_use]
    pub fn trust(mut self, trust: PeerTrust) -> Server {
        self.trust = trust;
        self
    }

    /// Gives each client `timeout` for its whole request and answer
    /// ([`DEFAULT_CLIENT_TIMEOUT`] unless set), then drops it.
    #[must_use]
    pub fn client_timeout(mut self, timeout: Duration) -> Server {
        self.client_timeout = timeout;
        self
    }

    /// Serves at most `max` clients at once ([`DEFAULT_MAX_CONNECTIONS`]
    /// unless set, and at least 1): a client past that drops the oldest.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Server {
        self.max_connections = max.max(1);
        self
    }

    /// The socket it serves on.
    #[must_use]
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Serves until `stop` resolves, and returns what it resolved to. The
    /// clients being served then go on being served (see
    /// [`Server::finish`]), and the lifetimes of what is held go on
    /// running, until the server is dropped; it may serve again.
    pub async fn run_until<T>(&mut self, stop: impl Future<Output = T>) -> T {
        self.start();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                stopped = &mut stop => return stopped,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => self.accepted(stream),
                    Err(err) if out_of_fds(&err) && self.turn_away_at_limit() => {}
                    Err(err) => {
                        // A connection gone before it was accepted, or a
                        // moment without fds: neither ends the server.
                        self.log(&format!("accept failed: {err}"));
                        if err.kind() != ErrorKind::ConnectionAborted {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                },
            }
        }
    }

    /// Serves for as long as the program runs.
    pub async fn run(mut self) {
        let never = self.run_until(std::future::pending::<Infallible>()).await;
        match never {}
    }

    /// Waits until every client being served has its answer (or has run
    /// out of time), accepting no new ones meanwhile: they wait in the
    /// socket's backlog.
    pub async fn finish(&self) {
        loop {
            let ended = self.tasks.0.ended.notified();
            if self.tasks.0.lock().connections.is_empty() {
                return;
            }
            ended.await;
        }
    }

    /// Stops every task, and returns the socket and the holder, with all
    /// it holds.
    #[must_use]
    pub fn into_parts(self) -> (UnixListener, Holder<System>) {
        let holder = {
            let mut inner = self.tasks.0.lock();
            std::mem::replace(&mut inner.holder, Holder::new(System, 0))
        };
        (self.listener, holder)
    }

    /// Starts the timer and the watches of what the holder held before it
    /// served, once.
    fn start(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let shared = &self.tasks.0;
        let mut inner = shared.lock();
        let timer = tokio::spawn(expire(shared.clone()));
        inner.timer = Some(timer.abort_handle());
        let watches = inner.holder.watches();
        inner.carry_out(shared, watches);
    }

    fn log(&self, message: &str) {
        self.tasks.0.lock().hooks.log(message);
    }

    /// At the open-file limit: closes the spare fd to accept the next
    /// client in its place, tells it the holder is full, and opens the
    /// spare again. Returns whether a client was told; without a spare,
    /// nothing is done.
    fn turn_away_at_limit(&mut self) -> bool {
        let Some(spare) = self.spare.take() else {
            self.spare = spare_fd();
            return false;
        };
        drop(spare);
        // Closed again at once, after one short line into its empty
        // buffer: neither close-on-exec nor non-blocking is needed (and
        // Apple's systems have no accept4 to set them).
        let accepted = rustix::net::accept(self.listener.as_fd());
        if let Ok(client) = &accepted {
            let refusal = Refusal::new(
                RefusalKind::Full,
                "the holder is at its open-file limit (RLIMIT_NOFILE): try again when fewer clients are connected",
            );
            let _ = rustix::io::write(client, refusal.line().as_bytes());
            self.log("turned away a client: at the open-file limit");
        }
        drop(accepted);
        self.spare = spare_fd();
        self.spare.is_some()
    }

    /// Takes a new connection: turns away a stranger at once, and makes
    /// room by dropping the oldest connection when there is none.
    fn accepted(&self, stream: UnixStream) {
        let peer = match super::peer_ids(stream.as_fd()) {
            Ok(peer) => peer,
            Err(err) => {
                self.log(&format!(
                    "turned away a client that cannot be identified: {err}"
                ));
                return;
            }
        };
        if let Err(refusal) = check_peer(&peer, &self.trust) {
            self.log(&format!("turned away: {}", refusal.message));
            let _ = stream.try_write(refusal.line().as_bytes());
            return;
        }
        let shared = &self.tasks.0;
        let mut inner = shared.lock();
        if inner.connections.len() >= self.max_connections {
            if let Some((_, oldest)) = inner.connections.pop_first() {
                oldest.abort();
                let max = self.max_connections;
                inner
                    .hooks
                    .log(&format!("{max} connections open: dropped the oldest"));
            }
        }
        let id = inner.next_connection;
        inner.next_connection += 1;
        let caller = Caller::new(peer.uid, peer.pid);
        let task = tokio::spawn(connection(
            shared.clone(),
            id,
            stream,
            caller,
            self.client_timeout,
        ));
        inner.connections.insert(id, task.abort_handle());
    }
}

/// An fd to keep in reserve: `/dev/null`, read only.
fn spare_fd() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

/// Whether `accept` failed for want of an fd (`EMFILE`, `ENFILE`).
fn out_of_fds(err: &io::Error) -> bool {
    let emfile = rustix::io::Errno::MFILE.raw_os_error();
    let enfile = rustix::io::Errno::NFILE.raw_os_error();
    matches!(err.raw_os_error(), Some(code) if code == emfile || code == enfile)
}

/// Serves the users and groups `trust` trusts; a refusal tells the
/// client who it is and how it could be let in.
fn check_peer(peer: &PeerCredentials, trust: &PeerTrust) -> Result<(), Refusal> {
    if trust.trusts(peer) {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::Denied,
        format!(
            "uid {} (gid {}) may not use this holder: it serves {trust}; start it with --allow-uid {} to allow",
            peer.uid, peer.gid, peer.uid
        ),
    ))
}

impl Inner {
    /// Carries out `effects`: the watches and the timer here, then each
    /// by the hooks.
    fn carry_out(&mut self, shared: &Arc<Shared>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Watch { id, pid } => {
                    let exit = Exit::watch(pid, shared);
                    let task = tokio::spawn(watch(shared.clone(), id, exit));
                    if let Some(old) = self.watches.insert(id, task.abort_handle()) {
                        old.abort();
                    }
                }
                Effect::Unwatch { id } => {
                    if let Some(task) = self.watches.remove(&id) {
                        task.abort();
                    }
                }
                Effect::Expiry(_) => shared.expiry.notify_one(),
                _ => {}
            }
            self.hooks.effect(&self.holder, &effect);
        }
    }
}

/// The timer: drops what expires, when it does.
async fn expire(shared: Arc<Shared>) {
    loop {
        let changed = shared.expiry.notified();
        let next = shared.lock().holder.next_expiry();
        let Some(at) = next else {
            changed.await;
            continue;
        };
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(at.saturating_sub(super::unix_now())) => {
                let mut inner = shared.lock();
                let effects = inner.holder.expire(super::unix_now());
                inner.carry_out(&shared, effects);
            }
        }
    }
}

/// Waits for the exit of a process, and tells the holder.
async fn watch(shared: Arc<Shared>, id: u64, exit: Exit) {
    exit.wait().await;
    let mut inner = shared.lock();
    inner.watches.remove(&id);
    let effects = inner.holder.exited(id);
    inner.carry_out(&shared, effects);
}

/// One client, in a task of its own, with its deadline.
async fn connection(
    shared: Arc<Shared>,
    id: u64,
    stream: UnixStream,
    caller: Caller,
    timeout: Duration,
) {
    let served = tokio::time::timeout(timeout, serve(&shared, &stream, caller)).await;
    let mut inner = shared.lock();
    match served {
        Ok(Ok(())) => {}
        Ok(Err(err)) => inner.hooks.log(&format!("a client went away: {err}")),
        Err(_) => inner.hooks.log(&format!(
            "dropped a client of pid {:?} that took longer than {timeout:?}",
            caller.pid
        )),
    }
    inner.connections.remove(&id);
    drop(inner);
    shared.ended.notify_one();
}

/// One client: the greeting, its request, the answer; after a take's
/// answer, its commit.
async fn serve(shared: &Arc<Shared>, stream: &UnixStream, caller: Caller) -> io::Result<()> {
    write_all(stream, GREETING.as_bytes(), &[]).await?;
    let mut reader = RequestReader::new();
    let mut buf = [0; 1024];
    let (answer, pending) = loop {
        let room = reader.room().min(buf.len());
        let mut slot = [None];
        let got = crate::tokio::recv_fds(stream, &mut buf[..room], &mut slot).await?;
        if got.bytes == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of its request",
            ));
        }
        let [fd] = slot;
        let discarded = got.fds_discarded > 0;
        match reader.received(&buf[..got.bytes], fd, discarded, got.control_truncated) {
            Progress::More => {}
            Progress::Done(request, fd) => {
                let mut inner = shared.lock();
                let decision = inner.holder.handle(request, fd, caller, super::unix_now());
                inner.carry_out(shared, decision.effects);
                let pending = Pending(shared.clone(), decision.reservation);
                break (decision.answer, pending);
            }
            Progress::Refused(refusal) => break (Answer::Refused(refusal), Pending::none(shared)),
        }
    };
    let fds: Vec<BorrowedFd<'_>> = match &answer {
        Answer::Ok { fds, .. } => fds.iter().map(AsFd::as_fd).collect(),
        Answer::Refused(refusal) => {
            let message = format!("refused: {}", refusal.message);
            shared.lock().hooks.log(&message);
            Vec::new()
        }
    };
    write_all(stream, answer.text().as_bytes(), &fds).await?;
    drop(answer);
    if pending.awaits_commit() {
        read_commit(stream).await?;
        pending.commit();
        return write_all(stream, b"ok\n", &[]).await;
    }
    pending.commit();
    Ok(())
}

/// Reads the client's `commit`, which comes once it has the fds of a take
/// where they go; anything else, or the end of the connection, fails.
async fn read_commit(stream: &UnixStream) -> io::Result<()> {
    let mut line = Vec::new();
    let mut buf = [0; 16];
    loop {
        stream.readable().await?;
        let n = match stream.try_read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the client closed the connection before it committed its take",
                ))
            }
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        };
        line.extend_from_slice(&buf[..n]);
        match commit_received(&line) {
            None => {}
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "the client sent something else than commit after its take",
                ))
            }
        }
    }
}

/// The reservation of a take, if the request was one: committed by
/// [`Pending::commit`], and aborted, with its names held as before, if
/// the connection ends first, however it ends (an error, the deadline,
/// the server dropped).
struct Pending(Arc<Shared>, Option<Reservation>);

impl Pending {
    fn none(shared: &Arc<Shared>) -> Pending {
        Pending(shared.clone(), None)
    }

    fn awaits_commit(&self) -> bool {
        self.1.as_ref().is_some_and(Reservation::awaits_commit)
    }

    fn commit(mut self) {
        if let Some(reservation) = self.1.take() {
            let mut inner = self.0.lock();
            let effects = inner.holder.commit(reservation);
            inner.carry_out(&self.0, effects);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(reservation) = self.1.take() {
            let mut inner = self.0.lock();
            let effects = inner.holder.abort(reservation);
            inner.carry_out(&self.0, effects);
        }
    }
}

/// Writes all of `bytes` to the client, with `fds` attached to the first.
async fn write_all(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut sent = crate::tokio::send_fds(stream, bytes, fds).await?;
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

/// The exit of a process: its pidfd where there are pidfds and one of the
/// [`MAX_PIDFD_WATCHES`] is free, else its pid, looked at every second.
enum Exit {
    Pidfd(tokio::io::unix::AsyncFd<OwnedFd>, PidfdSlot),
    Pid(u32),
}

impl Exit {
    fn watch(pid: u32, shared: &Arc<Shared>) -> Exit {
        let Some(slot) = PidfdSlot::take(shared) else {
            return Exit::Pid(pid);
        };
        let pidfd = crate::process::Process::open(pid)
            .and_then(|process| process.as_fd().try_clone_to_owned());
        // SAFETY: an OwnedFd is one open fd for as long as it lives, and
        // the AsyncFd owns it.
        match pidfd.map(|pidfd| unsafe { tokio::io::unix::AsyncFd::register(pidfd) }) {
            Ok(Ok(pidfd)) => Exit::Pidfd(pidfd, slot),
            _ => Exit::Pid(pid),
        }
    }

    async fn wait(self) {
        use super::machine::Os;
        match self {
            Exit::Pidfd(pidfd, _slot) => {
                let _ = pidfd.readable().await;
            }
            Exit::Pid(pid) => {
                while System.alive(pid) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// One of the [`MAX_PIDFD_WATCHES`] pidfds, given back when its watch
/// ends, however it ends (the process exited, the name was dropped, the
/// server was dropped).
struct PidfdSlot(Arc<Shared>);

impl PidfdSlot {
    fn take(shared: &Arc<Shared>) -> Option<PidfdSlot> {
        shared
            .pidfds
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < MAX_PIDFD_WATCHES).then_some(open + 1)
            })
            .ok()
            .map(|_| PidfdSlot(shared.clone()))
    }
}

impl Drop for PidfdSlot {
    fn drop(&mut self) {
        self.0.pidfds.fetch_sub(1, Ordering::Relaxed);
    }
}
