//! The holder's side on Windows: a [`Server`] of an `AF_UNIX` path or
//! loopback TCP, with a thread per client and a bound on every wait.
//!
//! The server blocks rather than running on tokio: each client has a
//! thread of its own, whose every read and write waits at most until the
//! client's deadline (the socket's timeouts), and at most
//! [`Server::max_connections`] are served at once; one more thread keeps
//! the lifetimes. A holder serves few clients, each for one short request,
//! and the blocking calls are the ones that are known to work under Wine.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::os::windows::io::{AsSocket, OwnedSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::codec::{commit_received, GREETING};
use super::machine::{Answer, Caller, Effect, Holder, Os, Reservation};
use super::protocol::{Entry, Refusal, RefusalKind, Request, MAX_REQUEST};
use super::transport::{Listener, Stream};
use super::{
    unix_now, Challenge, DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_NAMES, PROVE, SOCKET_RECORD_LEN,
};
use crate::{sys, PeerTrust};

/// The most clients served at once unless told; one more is told the
/// holder is full.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How often the processes whose exit drops a socket are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The [`Os`] of a holder of sockets on Windows: what a socket is from
/// `getsockopt` and `getsockname`, a copy by `WSADuplicateSocketW` for this
/// process, and whether a process runs from `OpenProcess`.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Os for System {
    type Fd = OwnedSocket;

    fn describe(&self, name: &str, socket: &OwnedSocket) -> Entry {
        let kind = match sys::socket_kind(socket.as_socket()) {
            Ok(kind) => {
                let base = if kind.is_tcp() {
                    "tcp"
                } else if kind.is_udp() {
                    "udp"
                } else {
                    "socket"
                };
                if kind.listening {
                    format!("{base} listener")
                } else {
                    base.to_owned()
                }
            }
            Err(_) => "other".to_owned(),
        };
        Entry {
            name: name.to_owned(),
            kind,
            address: sys::local_address(socket.as_socket()).map(|a| a.to_string()),
            ..Entry::default()
        }
    }

    fn duplicate(&self, socket: &OwnedSocket) -> io::Result<OwnedSocket> {
        socket.try_clone()
    }

    fn alive(&self, pid: u32) -> bool {
        sys::process_alive(pid)
    }
}

/// A holder serving clients at an `AF_UNIX` path or on loopback TCP, on
/// Windows.
///
/// Each client's process is learnt before its request is read: over
/// `AF_UNIX` from Windows (`SIO_AF_UNIX_GETPEERPID`), at once; over TCP by
/// the proof of the [module](super)'s protocol. Then its user, from that
/// process's token: it is served if it runs as this process's user, as
/// `LocalSystem`, or as a user allowed ([`Server::trust`]). Others get a
/// refusal and the connection closes. The sockets of an answer are
/// duplicated for that process, and no other.
///
/// # Examples
///
/// ```no_run
/// use io_fdpass::holder::{address, Listener, Server};
///
/// // Or r"C:\run\fds.sock", where Windows has AF_UNIX.
/// let listener = Listener::bind(&address("tcp:127.0.0.1:7000")?)?;
/// Server::new(listener).run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server {
    listener: Listener,
    holder: Holder<System>,
    log: Box<dyn Fn(&str) + Send + Sync>,
    client_timeout: Duration,
    trust: PeerTrust,
    max_connections: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("holder", &self.holder)
            .field("client_timeout", &self.client_timeout)
            .field("trust", &self.trust)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// What every client's thread shares.
struct Shared {
    holder: Mutex<Holder<System>>,
    /// The watches (id to pid) and the next expiry.
    timers: Mutex<Timers>,
    changed: Condvar,
    connections: AtomicUsize,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

#[derive(Default)]
struct Timers {
    watches: BTreeMap<u64, u32>,
    expiry: Option<Duration>,
}

impl Shared {
    fn holder(&self) -> MutexGuard<'_, Holder<System>> {
        self.holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn timers(&self) -> MutexGuard<'_, Timers> {
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Carries out what the holder decided.
    fn apply(&self, effects: Vec<Effect>) {
        let mut timers = self.timers();
        for effect in effects {
            match effect {
                Effect::Watch { id, pid } => {
                    timers.watches.insert(id, pid);
                }
                Effect::Unwatch { id } => {
                    timers.watches.remove(&id);
                }
                Effect::Expiry(at) => timers.expiry = at,
                Effect::Log(message) => (self.log)(&message),
                // No systemd fd store and no state file on Windows.
                _ => {}
            }
        }
        self.changed.notify_all();
    }

    /// Drops what has expired, and what was kept until a process that has
    /// exited; waits until the next time there is something to do.
    fn keep_lifetimes(&self) {
        loop {
            let exited: Vec<u64> = {
                let timers = self.timers();
                timers
                    .watches
                    .iter()
                    .filter(|&(_, &pid)| !sys::process_alive(pid))
                    .map(|(&id, _)| id)
                    .collect()
            };
            for id in exited {
                let effects = self.holder().exited(id);
                self.apply(effects);
            }
            let now = unix_now();
            let due = self.timers().expiry.is_some_and(|at| at <= now);
            if due {
                let effects = self.holder().expire(now);
                self.apply(effects);
            }
            let timers = self.timers();
            let mut wait = match timers.expiry {
                Some(at) => at.saturating_sub(unix_now()),
                None => Duration::from_secs(3600),
            };
            if !timers.watches.is_empty() {
                wait = wait.min(WATCH_EVERY);
            }
            drop(
                self.changed
                    .wait_timeout(timers, wait.max(Duration::from_millis(1))),
            );
        }
    }
}

impl Server {
    /// A server of `listener` (a [`Listener`], or a
    /// [`TcpListener`](std::net::TcpListener) on loopback) with an empty
    /// holder, and the defaults.
    #[must_use]
    pub fn new(listener: impl Into<Listener>) -> Server {
        Server {
            listener: listener.into(),
            holder: Holder::new(System, DEFAULT_MAX_NAMES),
            log: Box::new(|_| {}),
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            trust: PeerTrust::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Serves `holder` in place of an empty one.
    #[must_use]
    pub fn with_holder(mut self, holder: Holder<System>) -> Server {
        self.holder = holder;
        self
    }

    /// Sends what the server does and decides to `log`: a client turned
    /// away, gone, too slow; what was dropped.
    #[must_use]
    pub fn log(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Server {
        self.log = Box::new(log);
        self
    }

    /// Serves clients that `trust` trusts ([`PeerTrust::new`] unless set).
    #[must_use]
    pub fn trust(mut self, trust: PeerTrust) -> Server {
        self.trust = trust;
        self
    }

    /// Gives each client `timeout` for its whole request and answer
    /// ([`DEFAULT_CLIENT_TIMEOUT`] unless set).
    #[must_use]
    pub fn client_timeout(mut self, timeout: Duration) -> Server {
        self.client_timeout = timeout;
        self
    }

    /// Serves at most `max` clients at once ([`DEFAULT_MAX_CONNECTIONS`]
    /// unless set); one more is told the holder is full.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Server {
        self.max_connections = max.max(1);
        self
    }

    /// The socket it listens on.
    #[must_use]
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Serves for as long as the program runs.
    ///
    /// # Errors
    ///
    /// The error of a thread that cannot be started; a failed accept is
    /// logged and the server goes on.
    pub fn run(self) -> io::Result<()> {
        let shared = Arc::new(Shared {
            timers: Mutex::new(Timers {
                watches: self
                    .holder
                    .watches()
                    .into_iter()
                    .filter_map(|effect| match effect {
                        Effect::Watch { id, pid } => Some((id, pid)),
                        _ => None,
                    })
                    .collect(),
                expiry: self.holder.next_expiry(),
            }),
            holder: Mutex::new(self.holder),
            changed: Condvar::new(),
            connections: AtomicUsize::new(0),
            log: self.log,
        });
        let lifetimes = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("holder lifetimes".into())
            .spawn(move || lifetimes.keep_lifetimes())?;
        loop {
            let stream = match self.listener.accept() {
                Ok(stream) => stream,
                Err(err) => {
                    (shared.log)(&format!("accept failed: {err}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let served = shared.connections.fetch_add(1, Ordering::SeqCst);
            let client = Client {
                shared: Arc::clone(&shared),
                deadline: Instant::now() + self.client_timeout,
                trust: self.trust.clone(),
            };
            if served >= self.max_connections {
                client.turn_away(
                    stream,
                    &Refusal::new(
                        RefusalKind::Full,
                        format!(
                            "the holder serves {} clients at once: try again later",
                            self.max_connections
                        ),
                    ),
                );
                continue;
            }
            let started = std::thread::Builder::new()
                .name("holder client".into())
                .spawn(move || client.serve(stream));
            if let Err(err) = started {
                (shared.log)(&format!("cannot start a client's thread: {err}"));
            }
        }
    }
}

/// One client being served, on a thread of its own.
struct Client {
    shared: Arc<Shared>,
    deadline: Instant,
    trust: PeerTrust,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Client {
    /// Sends `refusal` and closes, within the deadline.
    fn turn_away(&self, mut stream: Stream, refusal: &Refusal) {
        (self.shared.log)(&format!("turned a client away: {refusal}"));
        if self.set_deadline(&stream).is_ok() {
            let _ = stream.write_all(refusal.line().as_bytes());
        }
    }

    fn serve(self, mut stream: Stream) {
        match self.check_client(&mut stream) {
            Ok(Ok(pid)) => {
                if let Err(err) = self.exchange(&mut stream, pid) {
                    (self.shared.log)(&format!("client pid {pid}: {err}"));
                }
            }
            Ok(Err(refusal)) => self.turn_away(stream, &refusal),
            Err(err) => (self.shared.log)(&format!("a client whose pid is not known: {err}")),
        }
    }

    /// Learns the client's pid, and greets it with this process's: over
    /// `AF_UNIX` from Windows, before the greeting; over TCP by its proof,
    /// after. Its pid once it runs as a user trusted.
    fn check_client(&self, stream: &mut Stream) -> io::Result<Result<u32, Refusal>> {
        let greeting = format!("{GREETING}pid {}\n", sys::current_pid());
        if let Some(pid) = stream.known_peer_pid() {
            let pid = pid?;
            if let Err(refusal) = self.check_user(pid)? {
                return Ok(Err(refusal));
            }
            self.set_deadline(stream)?;
            stream.write_all(greeting.as_bytes())?;
            return Ok(Ok(pid));
        }
        self.set_deadline(stream)?;
        stream.write_all(greeting.as_bytes())?;
        let line = match self.read_line(stream)? {
            Ok(line) => line,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let claimed = std::str::from_utf8(&line).ok().and_then(|line| {
            line.strip_prefix(PROVE)?
                .strip_suffix('\n')?
                .parse::<u32>()
                .ok()
        });
        let Some(claimed) = claimed else {
            return Ok(Err(Refusal::invalid(
                "a client first proves its pid: prove PID, and a challenge (io_fdpass::holder::Client on Windows)",
            )));
        };
        let record = match self.read_record(stream)? {
            Ok(record) => record,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let denied = |why: String| Ok(Err(Refusal::new(RefusalKind::Denied, why)));
        let proof = match super::answer(&record, self.deadline) {
            Ok(proof) => proof,
            Err(err) => return denied(format!("the challenge cannot be answered: {err}")),
        };
        let challenge = match Challenge::new(claimed) {
            Ok(challenge) => challenge,
            Err(err) => {
                return denied(format!(
                    "no challenge can be made for process {claimed}: {err}"
                ))
            }
        };
        self.set_deadline(stream)?;
        let mut bytes = proof.into_bytes();
        bytes.extend_from_slice(&challenge.record);
        stream.write_all(&bytes)?;
        let line = match self.read_line(stream)? {
            Ok(line) => line,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !challenge.answered_by(&line) {
            return denied(format!(
                "the client says it is process {claimed}, and could not prove it"
            ));
        }
        Ok(self.check_user(claimed)?.map(|()| claimed))
    }

    /// Whether process `pid` runs as a user trusted: a refusal if not.
    fn check_user(&self, pid: u32) -> io::Result<Result<(), Refusal>> {
        let peer = crate::PeerCredentials {
            user: sys::process_user(pid)?,
            pid: Some(pid),
        };
        Ok(self
            .trust
            .check(&peer)
            .map_err(|err| Refusal::new(RefusalKind::Denied, err.to_string())))
    }

    /// Reads the request (and a store's socket), and answers.
    fn exchange(&self, stream: &mut Stream, pid: u32) -> io::Result<()> {
        let (request, socket) = match self.read_request(stream)? {
            Ok(read) => read,
            Err(refusal) => {
                self.set_deadline(stream)?;
                return stream.write_all(refusal.line().as_bytes());
            }
        };
        let decision =
            self.shared
                .holder()
                .handle(request, socket, Caller::of_process(pid), unix_now());
        self.shared.apply(decision.effects);
        let reservation = decision.reservation;
        let bytes = match answer_for(decision.answer, pid) {
            Ok(bytes) => bytes,
            Err(refusal) => {
                self.end_take(reservation, false);
                self.set_deadline(stream)?;
                return stream.write_all(refusal.line().as_bytes());
            }
        };
        let sent = self
            .set_deadline(stream)
            .and_then(|()| stream.write_all(&bytes));
        let Some(reservation) = reservation else {
            return sent;
        };
        if let Err(err) = sent {
            self.end_take(Some(reservation), false);
            return Err(err);
        }
        if !reservation.awaits_commit() {
            self.end_take(Some(reservation), true);
            return Ok(());
        }
        let committed = self.read_commit(stream);
        self.end_take(Some(reservation), matches!(committed, Ok(true)));
        if committed? {
            self.set_deadline(stream)?;
            stream.write_all(b"ok\n")?;
        }
        Ok(())
    }

    /// Commits or aborts a take.
    fn end_take(&self, reservation: Option<Reservation>, commit: bool) {
        let Some(reservation) = reservation else {
            return;
        };
        let effects = if commit {
            self.shared.holder().commit(reservation)
        } else {
            self.shared.holder().abort(reservation)
        };
        self.shared.apply(effects);
    }

    /// Reads the request line and, for a store, the socket's record after
    /// it; a refusal for a request that breaks the protocol.
    fn read_request(
        &self,
        stream: &mut Stream,
    ) -> io::Result<Result<(Request, Option<OwnedSocket>), Refusal>> {
        let mut line = match self.read_line(stream)? {
            Ok(line) => line,
            Err(refusal) => return Ok(Err(refusal)),
        };
        line.pop();
        let Ok(text) = std::str::from_utf8(&line) else {
            return Ok(Err(Refusal::invalid("the request is not text")));
        };
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !matches!(request, Request::Store { .. }) {
            return Ok(Ok((request, None)));
        }
        Ok(self
            .read_socket(stream)?
            .map(|socket| (request, Some(socket))))
    }

    /// Reads one line, byte by byte (a record that may follow is not to be
    /// read with it); a refusal past [`MAX_REQUEST`] bytes.
    fn read_line(&self, stream: &mut Stream) -> io::Result<Result<Vec<u8>, Refusal>> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            if line.len() >= MAX_REQUEST {
                return Ok(Err(Refusal::invalid(format!(
                    "a request is one line of at most {MAX_REQUEST} bytes"
                ))));
            }
            self.set_deadline(stream)?;
            if stream.read(&mut byte)? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            line.push(byte[0]);
        }
        Ok(Ok(line))
    }

    /// Reads a socket's record and opens it; a refusal for a record cut
    /// short, or made for another process.
    fn read_socket(&self, stream: &mut Stream) -> io::Result<Result<OwnedSocket, Refusal>> {
        let record = match self.read_record(stream)? {
            Ok(record) => record,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(sys::socket_from_info(&record).map_err(|err| {
            Refusal::invalid(format!(
                "{err}: a socket's record is made by WSADuplicateSocketW for the holder's pid"
            ))
        }))
    }

    /// Reads a socket's record; a refusal for one cut short.
    fn read_record(
        &self,
        stream: &mut Stream,
    ) -> io::Result<Result<[u8; SOCKET_RECORD_LEN], Refusal>> {
        let mut record = [0u8; SOCKET_RECORD_LEN];
        let mut filled = 0;
        while filled < record.len() {
            self.set_deadline(stream)?;
            match stream.read(&mut record[filled..])? {
                0 => {
                    return Ok(Err(Refusal::invalid(
                        "the socket's record (WSAPROTOCOL_INFOW) was cut short",
                    )))
                }
                n => filled += n,
            }
        }
        Ok(Ok(record))
    }

    /// Reads the client's `commit`: whether it came.
    fn read_commit(&self, stream: &mut Stream) -> io::Result<bool> {
        let mut line = Vec::new();
        let mut chunk = [0u8; 16];
        loop {
            if let Some(done) = commit_received(&line) {
                return Ok(done);
            }
            self.set_deadline(stream)?;
            match stream.read(&mut chunk)? {
                0 => return Ok(false),
                n => line.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sets the connection's timeouts to what is left of the client's
    /// time.
    fn set_deadline(&self, stream: &Stream) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "the client ran out of time",
            ));
        }
        stream.set_timeouts(left)
    }
}

/// The answer's bytes: its text, with the sockets' records made for `pid`
/// after the `ok` line; a refusal if a socket cannot be duplicated for it.
fn answer_for(answer: Answer<OwnedSocket>, pid: u32) -> Result<Vec<u8>, Refusal> {
    let text = answer.text();
    let Answer::Ok { body, fds } = answer else {
        return Ok(text.into_bytes());
    };
    let mut bytes = b"ok\n".to_vec();
    for socket in &fds {
        let record = sys::duplicate_socket(socket.as_socket(), pid).map_err(|err| {
            Refusal::new(
                RefusalKind::Failed,
                format!("a socket cannot be duplicated for process {pid}: {err}"),
            )
        })?;
        bytes.extend_from_slice(&record);
    }
    bytes.extend_from_slice(body.as_bytes());
    Ok(bytes)
}
