//! What a holder decides, as a state machine that does no I/O and reads
//! no clock.
//!
//! A [`Holder`] keeps fds under names. The side that owns the sockets (the
//! tokio `holder::Server`, or `fdpass hold`) feeds it each request
//! with the time, and gets back a [`Decision`]: the [`Answer`] to send and
//! the [`Effect`]s to carry out (a name to bring up to date in systemd's fd
//! store, the state file to rewrite, a process whose exit to watch, the
//! next time something expires). It tells it when that time has come
//! ([`Holder::expire`]) and when a watched process has exited
//! ([`Holder::exited`]).
//!
//! What only the OS can answer (what an fd is, a copy of it, whether a
//! process is alive) the machine asks through the small [`Os`] trait,
//! which the I/O side implements; it is also what makes the machine
//! generic over the fd type, so that it holds `OwnedFd`s on Unix
//! ([`System`](super::System)) and may hold sockets or handles elsewhere.
//! Time comes in as an argument: the time since the Unix epoch, as a
//! [`Duration`].

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::time::Duration;

use super::protocol::{Entry, Lifetime, Refusal, RefusalKind, Request};

/// The name of a holder's own socket in `LISTEN_FDNAMES` and systemd's fd
/// store: no held fd may take it.
pub const SOCKET_NAME: &str = "fdpass-hold";

/// The name of a holder's state file there: no held fd may take it.
pub const STATE_NAME: &str = "fdpass-hold-state";

/// Whether `name` is one a holder keeps for itself ([`SOCKET_NAME`],
/// [`STATE_NAME`], [`HANDOVER_NAME`]), which no held fd may take: not stored, not adopted,
/// not taken over from another holder.
#[must_use]
pub fn is_reserved(name: &str) -> bool {
    name == SOCKET_NAME || name == STATE_NAME || name == HANDOVER_NAME
}

/// The name under which a holder that upgrades hands its next image the
/// pipe on which that image says it has taken over: no held fd may take
/// it.
pub const HANDOVER_NAME: &str = "fdpass-hold-handover";

/// The questions about fds and processes that only the OS can answer,
/// asked by a [`Holder`] and answered by the I/O side.
pub trait Os {
    /// What is held: `OwnedFd` on Unix.
    type Fd;

    /// What `fd` is, as a `list` entry named `name`, with its
    /// [`kind`](Entry::kind), [`address`](Entry::address) and
    /// [`path`](Entry::path) (on Unix, from `FdKind::of`).
    fn describe(&self, name: &str, fd: &Self::Fd) -> Entry;

    /// A copy of `fd` to send, sharing its open file description (`dup`).
    ///
    /// # Errors
    ///
    /// Why it cannot be copied: [`ErrorKind::QuotaExceeded`] at the limit
    /// of open fds, which the holder answers as
    /// [`Full`](RefusalKind::Full), anything else as
    /// [`Failed`](RefusalKind::Failed).
    fn duplicate(&self, fd: &Self::Fd) -> io::Result<Self::Fd>;

    /// Whether process `pid` exists.
    fn alive(&self, pid: u32) -> bool;
}

/// Who makes a request, as the kernel tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caller {
    /// Its user id.
    pub uid: u32,
    /// Its process id, where the OS tells it.
    pub pid: Option<u32>,
    /// Whether `uid` says who it is: not on Windows, whose users are SIDs.
    has_uid: bool,
}

impl Caller {
    /// A caller of user `uid`, in process `pid`.
    #[must_use]
    pub fn new(uid: u32, pid: Option<u32>) -> Caller {
        Caller {
            uid,
            pid,
            has_uid: true,
        }
    }

    /// A caller in process `pid` whose user is no uid (on Windows, where
    /// users are SIDs): its [`uid`](Caller::uid) is 0 and means nothing,
    /// and what it stores has no [`stored_by_uid`](Entry::stored_by_uid).
    #[must_use]
    pub fn of_process(pid: u32) -> Caller {
        Caller {
            uid: 0,
            pid: Some(pid),
            has_uid: false,
        }
    }
}

/// What the holder answers a request.
#[derive(Debug)]
pub enum Answer<F> {
    /// `ok`, with the text that follows it and the fds to attach to its
    /// first byte.
    Ok {
        /// The lines after `ok\n`: `list`'s entries, or nothing.
        body: String,
        /// The fds to send, in the order asked for.
        fds: Vec<F>,
    },
    /// The request is refused.
    Refused(Refusal),
}

impl<F> Answer<F> {
    /// The answer's text on the wire, newline included.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Answer::Ok { body, .. } => format!("ok\n{body}"),
            Answer::Refused(refusal) => refusal.line(),
        }
    }

    fn ok() -> Answer<F> {
        Answer::Ok {
            body: String::new(),
            fds: Vec::new(),
        }
    }
}

/// Something for the I/O side to do after a decision, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Bring `name` up to date in systemd's fd store, if there is one:
    /// remove it, then add the fd now held under it
    /// ([`Holder::fd`]), if any.
    FdStore {
        /// The name.
        name: String,
    },
    /// Rewrite the state file with what is held now
    /// ([`Holder::entries`], [`state_file::encode`](super::state_file::encode)).
    Record,
    /// Watch process `pid`, and call [`Holder::exited`] with `id` when it
    /// exits.
    Watch {
        /// The watch's id.
        id: u64,
        /// The process.
        pid: u32,
    },
    /// Stop the watch `id`: what it was for is gone.
    Unwatch {
        /// The watch's id.
        id: u64,
    },
    /// The next time something expires is now this (since the Unix
    /// epoch), or nothing: call [`Holder::expire`] then.
    Expiry(Option<Duration>),
    /// What happened, for a log.
    Log(String),
}

/// A decision: what to answer and what to do.
#[derive(Debug)]
pub struct Decision<F> {
    /// The answer to send.
    pub answer: Answer<F>,
    /// What to do, in this order, before anything else is decided.
    pub effects: Vec<Effect>,
    /// The names a take reserved, sent in the answer but still held:
    /// [`Holder::commit`] once the client has them where they go,
    /// [`Holder::abort`] otherwise.
    pub reservation: Option<Reservation>,
}

/// The names a take reserved: held until [`Holder::commit`] removes them,
/// and held as before if [`Holder::abort`] ends the take instead. While
/// reserved, a name is still listed and fetched, but not taken again.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation is committed or aborted"]
pub struct Reservation {
    id: u64,
    names: Vec<String>,
    awaits_commit: bool,
}

impl Reservation {
    /// Whether the client confirms the take itself (the `reserve` request,
    /// then `commit`), rather than by receiving the answer (the `take`
    /// request of clients before it).
    #[must_use]
    pub fn awaits_commit(&self) -> bool {
        self.awaits_commit
    }

    /// The names reserved.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// An fd held, and what is known of it.
#[derive(Debug)]
struct Held<F> {
    fd: F,
    entry: Entry,
    /// Tells this fd from a later one stored under the same name; the id
    /// of its watch, if it has one.
    id: u64,
    /// When it expires, since the Unix epoch.
    expires: Option<Duration>,
    /// The id of the take that reserved it.
    reserved: Option<u64>,
}

/// The holder's state and rules: the fds it holds under names, with their
/// lifetimes. See the [module](self) for how it is driven.
#[derive(Debug)]
pub struct Holder<O: Os> {
    os: O,
    max_names: usize,
    held: BTreeMap<String, Held<O::Fd>>,
    next_id: u64,
}

impl<O: Os> Holder<O> {
    /// A holder that holds nothing yet, and at most `max_names` names.
    pub fn new(os: O, max_names: usize) -> Holder<O> {
        Holder {
            os,
            max_names,
            held: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Decides `request`, which came from `caller` at `now` (since the
    /// Unix epoch) with `fd` attached.
    pub fn handle(
        &mut self,
        request: Request,
        fd: Option<O::Fd>,
        caller: Caller,
        now: Duration,
    ) -> Decision<O::Fd> {
        let mut effects = Vec::new();
        let mut reservation = None;
        let answer = match (request, fd) {
            (Request::Store { name, lifetime }, Some(fd)) => {
                self.store(name, fd, lifetime, caller, now, &mut effects)
            }
            (Request::Fetch { names, take: false }, None) => self.fetch(&names, &mut effects),
            (Request::Fetch { names, take: true }, None) => {
                self.reserve(names, false, &mut reservation, &mut effects)
            }
            (Request::Reserve { names }, None) => {
                self.reserve(names, true, &mut reservation, &mut effects)
            }
            (Request::List, None) => Ok(Answer::Ok {
                body: self.entries().map(Entry::line).collect(),
                fds: Vec::new(),
            }),
            (Request::Drop { name }, None) => self.remove(&name, &mut effects),
            // A request reader lets an fd come only with a store, and a
            // store only with one.
            (_, _) => Err(Refusal::invalid(
                "only store comes with an fd, and store always",
            )),
        };
        Decision {
            answer: answer.unwrap_or_else(Answer::Refused),
            effects,
            reservation,
        }
    }

    fn store(
        &mut self,
        name: String,
        fd: O::Fd,
        lifetime: Lifetime,
        caller: Caller,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) -> Result<Answer<O::Fd>, Refusal> {
        if is_reserved(&name) {
            return Err(Refusal::invalid(format!(
                "{name} is the holder's own name in the fd store; choose another"
            )));
        }
        let held = self.held.len();
        if !self.held.contains_key(&name) && held >= self.max_names {
            return Err(Refusal::new(
                RefusalKind::Full,
                format!("it holds {held} names, its limit (--max-names); drop one first"),
            ));
        }
        if let Some(pid) = lifetime.until_exit {
            if !self.os.alive(pid) {
                return Err(Refusal::new(
                    RefusalKind::NotFound,
                    format!("there is no process {pid} to keep {name} until the exit of"),
                ));
            }
        }
        let expires = lifetime.ttl.map(|ttl| now.saturating_add(ttl));
        let mut entry = self.os.describe(&name, &fd);
        entry.stored_by_uid = caller.has_uid.then_some(caller.uid);
        entry.stored_by_pid = caller.pid;
        entry.stored_at = Some(now.as_secs());
        entry.expires_at = expires.map(|at| at.as_secs() + u64::from(at.subsec_nanos() > 0));
        entry.until_exit = lifetime.until_exit;
        self.insert(name.clone(), fd, entry, expires, effects);
        effects.push(Effect::FdStore { name: name.clone() });
        effects.push(Effect::Record);
        effects.push(Effect::Log(format!("stored {name}")));
        Ok(Answer::ok())
    }

    /// Copies of the fds under `names`, all or none.
    fn fetch(
        &mut self,
        names: &[String],
        effects: &mut Vec<Effect>,
    ) -> Result<Answer<O::Fd>, Refusal> {
        let fds = self.copies(names)?;
        effects.push(Effect::Log(format!("fetched {}", names.join(" "))));
        Ok(Answer::Ok {
            body: String::new(),
            fds,
        })
    }

    /// Copies of the fds under `names`, all or none, with the names
    /// reserved for this take until it is committed or aborted.
    fn reserve(
        &mut self,
        names: Vec<String>,
        awaits_commit: bool,
        reservation: &mut Option<Reservation>,
        effects: &mut Vec<Effect>,
    ) -> Result<Answer<O::Fd>, Refusal> {
        if let Some(name) = names
            .iter()
            .find(|name| self.held.get(*name).is_some_and(|h| h.reserved.is_some()))
        {
            return Err(Refusal::new(
                RefusalKind::NotFound,
                format!("another client is taking the fd named {name}"),
            ));
        }
        let fds = self.copies(&names)?;
        let id = self.next_id;
        self.next_id += 1;
        for name in &names {
            if let Some(held) = self.held.get_mut(name) {
                held.reserved = Some(id);
            }
        }
        effects.push(Effect::Log(format!("sent {} to take", names.join(" "))));
        *reservation = Some(Reservation {
            id,
            names,
            awaits_commit,
        });
        Ok(Answer::Ok {
            body: String::new(),
            fds,
        })
    }

    /// The take of `reservation` is done: its names are no longer held,
    /// but for those dropped or stored again meanwhile, which it no longer
    /// reserves.
    pub fn commit(&mut self, reservation: Reservation) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut took = Vec::new();
        for name in &reservation.names {
            if self.reserved_by(name, reservation.id) {
                self.forget(name, &mut effects);
                took.push(name.as_str());
            }
        }
        if !took.is_empty() {
            effects.push(Effect::Record);
        }
        effects.push(Effect::Log(format!("took {}", took.join(" "))));
        effects
    }

    /// The take of `reservation` did not happen (the client went away
    /// before it committed, or could not receive the fds): its names are
    /// held as before.
    pub fn abort(&mut self, reservation: Reservation) -> Vec<Effect> {
        for name in &reservation.names {
            if self.reserved_by(name, reservation.id) {
                if let Some(held) = self.held.get_mut(name) {
                    held.reserved = None;
                }
            }
        }
        vec![Effect::Log(format!(
            "still holding {}: the take was not committed",
            reservation.names.join(" ")
        ))]
    }

    fn reserved_by(&self, name: &str, id: u64) -> bool {
        self.held.get(name).is_some_and(|h| h.reserved == Some(id))
    }

    /// Copies of the fds under `names`, all or none.
    fn copies(&self, names: &[String]) -> Result<Vec<O::Fd>, Refusal> {
        let mut fds = Vec::with_capacity(names.len());
        for name in names {
            let held = self.held.get(name).ok_or_else(|| not_held(name))?;
            let copy = self.os.duplicate(&held.fd).map_err(|err| {
                let kind = if err.kind() == ErrorKind::QuotaExceeded {
                    RefusalKind::Full
                } else {
                    RefusalKind::Failed
                };
                Refusal::new(kind, format!("cannot copy the fd named {name}: {err}"))
            })?;
            fds.push(copy);
        }
        Ok(fds)
    }

    fn remove(&mut self, name: &str, effects: &mut Vec<Effect>) -> Result<Answer<O::Fd>, Refusal> {
        if self.forget(name, effects).is_none() {
            return Err(not_held(name));
        }
        effects.push(Effect::Record);
        effects.push(Effect::Log(format!("dropped {name}")));
        Ok(Answer::ok())
    }

    /// Drops every fd whose time is up at `now` (since the Unix epoch),
    /// and none before its time.
    pub fn expire(&mut self, now: Duration) -> Vec<Effect> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| held.expires.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        let mut effects = Vec::new();
        for name in due {
            self.forget(&name, &mut effects);
            effects.push(Effect::Record);
            effects.push(Effect::Log(format!("dropped {name}: its time is up")));
        }
        effects.push(Effect::Expiry(self.next_expiry()));
        effects
    }

    /// The process of watch `id` has exited: drops what was kept until
    /// then, if it is still held.
    pub fn exited(&mut self, id: u64) -> Vec<Effect> {
        let Some((name, pid)) = self
            .held
            .iter()
            .find(|(_, held)| held.id == id)
            .map(|(name, held)| (name.clone(), held.entry.until_exit))
        else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        self.forget(&name, &mut effects);
        effects.push(Effect::Record);
        let pid = pid.map_or_else(String::new, |pid| format!(" {pid}"));
        effects.push(Effect::Log(format!("dropped {name}: process{pid} exited")));
        effects
    }

    /// Holds `fd` under `name` with what a state file or another holder
    /// recorded of it, or else what it is; its lifetime runs on from
    /// there. For the fds a holder is given as it starts: each
    /// [`Effect::Watch`] it returns is for the I/O side to start.
    ///
    /// # Errors
    ///
    /// A refusal, with `fd` dropped, for a name that breaks
    /// [the rules](crate::notify::check_name), a holder's own name, or
    /// one already held.
    pub fn adopt(
        &mut self,
        name: String,
        fd: O::Fd,
        recorded: Option<Entry>,
    ) -> Result<Vec<Effect>, Refusal> {
        let why = if let Err(err) = crate::notify::check_name(&name) {
            err.to_string()
        } else if is_reserved(&name) {
            "the name is the holder's own".to_owned()
        } else if self.held.contains_key(&name) {
            "the name is given twice".to_owned()
        } else {
            String::new()
        };
        if !why.is_empty() {
            return Err(Refusal::invalid(format!(
                "closed an fd given as {name:?}: {why}"
            )));
        }
        let mut entry = recorded.unwrap_or_else(|| self.os.describe(&name, &fd));
        entry.name.clone_from(&name);
        let expires = entry.expires_at.map(Duration::from_secs);
        let mut effects = Vec::new();
        self.insert(name, fd, entry, expires, &mut effects);
        Ok(effects)
    }

    /// The fd held under `name`.
    #[must_use]
    pub fn fd(&self, name: &str) -> Option<&O::Fd> {
        self.held.get(name).map(|held| &held.fd)
    }

    /// What is held, in the order of the names.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.held.values().map(|held| &held.entry)
    }

    /// How many names are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The processes whose exit is watched, as [`Effect::Watch`] gave
    /// them: for an I/O side that starts again with this holder.
    #[must_use]
    pub fn watches(&self) -> Vec<Effect> {
        self.held
            .values()
            .filter_map(|held| {
                let pid = held.entry.until_exit?;
                Some(Effect::Watch { id: held.id, pid })
            })
            .collect()
    }

    /// The next time something expires, since the Unix epoch.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Duration> {
        self.held.values().filter_map(|held| held.expires).min()
    }

    /// The OS side it asks.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// Every fd held with its name, in the order of the names; the holder
    /// holds nothing after.
    pub fn take_all(&mut self) -> Vec<(String, O::Fd)> {
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(name, held)| (name, held.fd))
            .collect()
    }

    /// Holds `fd` under `name`, replacing (and dropping) what was there.
    fn insert(
        &mut self,
        name: String,
        fd: O::Fd,
        entry: Entry,
        expires: Option<Duration>,
        effects: &mut Vec<Effect>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let until_exit = entry.until_exit;
        let held = Held {
            fd,
            entry,
            id,
            expires,
            reserved: None,
        };
        if let Some(old) = self.held.insert(name, held) {
            if old.entry.until_exit.is_some() {
                effects.push(Effect::Unwatch { id: old.id });
            }
        }
        if let Some(pid) = until_exit {
            effects.push(Effect::Watch { id, pid });
        }
        effects.push(Effect::Expiry(self.next_expiry()));
    }

    /// Stops holding `name`, dropping its fd, which it returns.
    fn forget(&mut self, name: &str, effects: &mut Vec<Effect>) -> Option<O::Fd> {
        let held = self.held.remove(name)?;
        if held.entry.until_exit.is_some() {
            effects.push(Effect::Unwatch { id: held.id });
        }
        if held.expires.is_some() {
            effects.push(Effect::Expiry(self.next_expiry()));
        }
        effects.push(Effect::FdStore {
            name: name.to_owned(),
        });
        Some(held.fd)
    }
}

fn not_held(name: &str) -> Refusal {
    Refusal::new(
        RefusalKind::NotFound,
        format!("it holds no fd named {name}"),
    )
}

#[cfg(all(test, unix))]
mod tests;
