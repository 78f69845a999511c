//! The holder protocol, as pure code: what a client and a holder say to
//! each other, with no I/O. What a holder decides is in
//! [`machine`](super::machine).
//!
//! One request per connection:
//!
//! 1. The holder checks the client's uid as soon as it connects, and
//!    sends its greeting, `fdpass-hold 1\n`, or a refusal and closes.
//! 2. The client sends one request line, `VERB ARGS...\n`, with the fd of
//!    a `store` attached to its first byte:
//!    - `store NAME [ttl-ms=MILLISECONDS] [until-exit=PID]`
//!    - `fetch NAME...`
//!    - `reserve NAME...`: a take, in two steps (below)
//!    - `list`
//!    - `drop NAME`
//!    - `take NAME...`: a take in one step, as clients before `reserve`
//!      sent it; the names are removed once the answer is sent.
//! 3. The holder answers `ok\n`, with the fetched fds attached to its first
//!    byte, then `list`'s entries, one per line; or `error KIND MESSAGE\n`.
//!    Then it closes the connection; but after `ok` to `reserve`, it keeps
//!    the names, and the connection open, until the client sends
//!    `commit\n` there: then it removes them and answers `ok\n` again.
//!    A connection that ends without `commit` (the client could not use
//!    the fds, went away, or ran out of time) leaves the names held as
//!    before. A take is all or nothing.
//!
//! A `list` entry is the name, then `key=value` fields separated by
//! spaces, each value escaped (`%`, space and every byte outside `!`..=`~`
//! become `%XX`): `kind`, `address`, `path`,
//! `uid`, `pid`, `stored`, `expires`, `until-exit`. A field that does not
//! apply is left out. Unknown keys are skipped, so later versions may add
//! fields.

use std::fmt::{self, Write as _};
use std::io::{self, ErrorKind};
use std::time::Duration;

use super::codec::{escape, unescape};
#[cfg(unix)]
use crate::{FdKind, SocketFamily, SocketType};

/// The longest request line, in bytes, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The most names one `fetch` or `take` may ask for: the fds of one
/// message.
#[cfg(unix)]
pub const MAX_FETCH: usize = crate::MAX_FDS;
/// The most names one `fetch` or `take` may ask for: the sockets of one
/// answer.
#[cfg(windows)]
pub const MAX_FETCH: usize = crate::MAX_HANDLES;

/// How long a held fd is kept. The default is for as long as the holder
/// runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lifetime {
    /// Dropped this long after it is stored.
    pub ttl: Option<Duration>,
    /// Dropped when the process with this pid exits.
    pub until_exit: Option<u32>,
}

impl Lifetime {
    /// The longest `ttl` a holder takes: 100 years. A store with a longer
    /// one is refused ([`RefusalKind::Invalid`]); it would mean "forever",
    /// which is no `ttl` at all.
    pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// Kept for as long as the holder runs.
    #[must_use]
    pub fn forever() -> Lifetime {
        Lifetime::default()
    }

    /// Also dropped `ttl` after it is stored.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Lifetime {
        self.ttl = Some(ttl);
        self
    }

    /// Also dropped when process `pid` exits.
    #[must_use]
    pub fn until_exit(mut self, pid: u32) -> Lifetime {
        self.until_exit = Some(pid);
        self
    }
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Keep the attached fd under `name`, replacing what was held there.
    Store {
        /// The name.
        name: String,
        /// When it is dropped.
        lifetime: Lifetime,
    },
    /// Send copies of the fds held under `names`, in order; with `take`,
    /// stop holding them too.
    Fetch {
        /// The names, 1 to [`MAX_FETCH`].
        names: Vec<String>,
        /// Remove them as they are sent.
        take: bool,
    },
    /// Send the fds held under `names`, in order, and keep the names
    /// until the client commits the take on the same connection; a take
    /// not committed leaves them held.
    Reserve {
        /// The names, 1 to [`MAX_FETCH`].
        names: Vec<String>,
    },
    /// Say what is held.
    List,
    /// Close the fd held under `name`.
    Drop {
        /// The name.
        name: String,
    },
}

impl Request {
    /// The request line, newline included.
    #[must_use]
    pub fn line(&self) -> String {
        let mut line = String::new();
        match self {
            Request::Store { name, lifetime } => {
                line.push_str("store ");
                line.push_str(name);
                if let Some(ttl) = lifetime.ttl {
                    let _ = write!(line, " ttl-ms={}", ttl.as_millis());
                }
                if let Some(pid) = lifetime.until_exit {
                    let _ = write!(line, " until-exit={pid}");
                }
            }
            Request::Fetch { names, take } => {
                line.push_str(if *take { "take" } else { "fetch" });
                for name in names {
                    line.push(' ');
                    line.push_str(name);
                }
            }
            Request::Reserve { names } => {
                line.push_str("reserve");
                for name in names {
                    line.push(' ');
                    line.push_str(name);
                }
            }
            Request::List => line.push_str("list"),
            Request::Drop { name } => {
                line.push_str("drop ");
                line.push_str(name);
            }
        }
        line.push('\n');
        line
    }

    /// Parses a request line, without its newline.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] of kind [`Invalid`](RefusalKind::Invalid) that says
    /// what is wrong with it.
    pub fn parse(line: &str) -> Result<Request, Refusal> {
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let names = |args: &[&str]| -> Result<Vec<String>, Refusal> {
            args.iter()
                .map(|&name| match crate::notify::check_name(name) {
                    Ok(()) => Ok(name.to_owned()),
                    Err(e) => Err(Refusal::invalid(e.to_string())),
                })
                .collect()
        };
        match verb {
            "store" => {
                let (name, options) = args
                    .split_first()
                    .ok_or_else(|| Refusal::invalid("store needs a name"))?;
                let name = names(&[name])?.remove(0);
                let mut lifetime = Lifetime::forever();
                for option in options {
                    match option.split_once('=') {
                        Some(("ttl-ms", ms)) if lifetime.ttl.is_none() => {
                            lifetime.ttl = Some(ttl(ms)?);
                        }
                        Some(("until-exit", pid)) if lifetime.until_exit.is_none() => {
                            lifetime.until_exit = Some(number(pid)?);
                        }
                        _ => {
                            return Err(Refusal::invalid(format!(
                                "store takes one name, then ttl-ms=N and until-exit=PID at most once each, not {option:?}"
                            )))
                        }
                    }
                }
                Ok(Request::Store { name, lifetime })
            }
            "fetch" | "take" | "reserve" if args.is_empty() => {
                Err(Refusal::invalid(format!("{verb} needs at least one name")))
            }
            "fetch" | "take" | "reserve" if args.len() > MAX_FETCH => Err(Refusal::invalid(
                format!("{verb} takes at most {MAX_FETCH} names"),
            )),
            "reserve" => Ok(Request::Reserve {
                names: names(&args)?,
            }),
            "fetch" | "take" => Ok(Request::Fetch {
                names: names(&args)?,
                take: verb == "take",
            }),
            "list" if args.is_empty() => Ok(Request::List),
            "list" => Err(Refusal::invalid("list takes no names")),
            "drop" => match names(&args)?.as_mut_slice() {
                [name] => Ok(Request::Drop {
                    name: std::mem::take(name),
                }),
                _ => Err(Refusal::invalid("drop takes exactly one name")),
            },
            _ => Err(Refusal::invalid(format!(
                "unknown request {:?}: store, fetch, reserve, take, list or drop",
                truncated(verb)
            ))),
        }
    }
}

/// A `ttl-ms` of a store: milliseconds, at most [`Lifetime::MAX_TTL`].
fn ttl(ms: &str) -> Result<Duration, Refusal> {
    let too_long = || {
        Refusal::invalid(format!(
            "ttl-ms={} is longer than a holder keeps an fd: at most {} (100 years)",
            truncated(ms),
            Lifetime::MAX_TTL.as_millis()
        ))
    };
    let value: u64 = match number(ms) {
        Ok(value) => value,
        // All digits, yet no u64.
        Err(_) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(too_long())
        }
        Err(refusal) => return Err(refusal),
    };
    let ttl = Duration::from_millis(value);
    if ttl > Lifetime::MAX_TTL {
        return Err(too_long());
    }
    Ok(ttl)
}

/// A decimal number of the protocol.
fn number<T: std::str::FromStr>(text: &str) -> Result<T, Refusal> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::invalid(format!(
            "{:?} is not a number",
            truncated(text)
        )));
    }
    text.parse()
        .map_err(|_| Refusal::invalid(format!("{} is too large", truncated(text))))
}

/// At most 40 characters of `text`, for a message.
pub(super) fn truncated(text: &str) -> &str {
    text.char_indices()
        .nth(40)
        .map_or(text, |(i, _)| &text[..i])
}

/// Why a holder refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// No fd is held under a name asked for ([`ErrorKind::NotFound`]).
    NotFound,
    /// The client's user may not use the holder
    /// ([`ErrorKind::PermissionDenied`]).
    Denied,
    /// The request is malformed ([`ErrorKind::InvalidInput`]).
    Invalid,
    /// A limit of the holder is reached ([`ErrorKind::QuotaExceeded`]).
    Full,
    /// The holder could not do it: a system call failed
    /// ([`ErrorKind::Other`]).
    Failed,
}

impl RefusalKind {
    pub(super) const ALL: [RefusalKind; 5] = [
        RefusalKind::NotFound,
        RefusalKind::Denied,
        RefusalKind::Invalid,
        RefusalKind::Full,
        RefusalKind::Failed,
    ];

    /// Its word in the protocol.
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            RefusalKind::NotFound => "not-found",
            RefusalKind::Denied => "denied",
            RefusalKind::Invalid => "invalid",
            RefusalKind::Full => "full",
            RefusalKind::Failed => "failed",
        }
    }

    /// The kind of error a client returns for it.
    #[must_use]
    pub fn error_kind(self) -> ErrorKind {
        match self {
            RefusalKind::NotFound => ErrorKind::NotFound,
            RefusalKind::Denied => ErrorKind::PermissionDenied,
            RefusalKind::Invalid => ErrorKind::InvalidInput,
            RefusalKind::Full => ErrorKind::QuotaExceeded,
            RefusalKind::Failed => ErrorKind::Other,
        }
    }
}

/// A holder's refusal: its kind and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What happened, in one line.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`; line breaks in `message` become spaces.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        let message = message.into().replace(['\n', '\r'], " ");
        Refusal { kind, message }
    }

    /// A refusal of a malformed request.
    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Invalid, message)
    }

    /// Its answer line, newline included.
    #[must_use]
    pub(crate) fn line(&self) -> String {
        format!("error {} {}\n", self.kind.word(), self.message)
    }

    /// The error a client returns for it: of its kind, with the refusal
    /// itself inside ([`io::Error::get_ref`]), so that a caller can tell a
    /// refusal from a failure to reach the holder.
    #[must_use]
    pub fn into_error(self) -> io::Error {
        io::Error::new(self.kind.error_kind(), self)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the holder refused: {}", self.message)
    }
}

impl std::error::Error for Refusal {}

/// What the holder says of one fd it holds, in answer to `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// What it is, in a word or three: `tcp listener`, `unix stream`,
    /// `udp`, `pipe`, `file`, `character device`, … (see
    /// `Entry::describe`). Free text: a holder newer than its client may
    /// name a kind the client has not heard of, which it shows as it is.
    pub kind: String,
    /// A socket's local address: `127.0.0.1:8080`, `/run/app.sock`.
    pub address: Option<String>,
    /// A file's or directory's path.
    pub path: Option<String>,
    /// The uid of the process that stored it.
    pub stored_by_uid: Option<u32>,
    /// The pid of the process that stored it.
    pub stored_by_pid: Option<u32>,
    /// When it was stored, in seconds since the Unix epoch.
    pub stored_at: Option<u64>,
    /// When it will be dropped, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The pid whose exit drops it.
    pub until_exit: Option<u32>,
}

impl Entry {
    /// An entry named `name` for an fd of kind `kind`, with
    /// [`kind`](Entry::kind), [`address`](Entry::address) and
    /// [`path`](Entry::path) filled in and the rest left empty.
    #[must_use]
    #[cfg(unix)]
    pub fn describe(name: &str, kind: &FdKind) -> Entry {
        let lossy = |path: &std::path::Path| path.to_string_lossy().into_owned();
        let (kind, address, path) = match kind {
            FdKind::Socket(socket) => {
                let base = match (socket.family, socket.socket_type) {
                    (SocketFamily::Inet | SocketFamily::Inet6, SocketType::Stream) => {
                        "tcp".to_owned()
                    }
                    (SocketFamily::Inet | SocketFamily::Inet6, SocketType::Datagram) => {
                        "udp".to_owned()
                    }
                    (SocketFamily::Unix, ty) => format!("unix {ty}"),
                    (family, ty) => format!("{family} {ty}"),
                };
                let kind = if socket.listening {
                    format!("{base} listener")
                } else {
                    base
                };
                (kind, socket.local.as_ref().map(ToString::to_string), None)
            }
            FdKind::Other(what) => (kind.word().to_owned(), None, what.clone()),
            _ => (kind.word().to_owned(), None, kind.path().map(lossy)),
        };
        Entry {
            name: name.to_owned(),
            kind,
            address,
            path,
            ..Entry::default()
        }
    }

    /// How long it has left at `now` (since the Unix epoch), in whole
    /// seconds rounded down; `None` if no time drops it.
    ///
    /// The holder rounds [`expires_at`](Entry::expires_at) up to a whole
    /// second, so that nothing goes before its time; rounding what is
    /// left down is the other half. A `--ttl 4s` stored at 100.3 s
    /// expires at 105 s and has 4 s left at 100.4 s: never more than was
    /// asked, however far into its second the store and the `list` fall.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use io_fdpass::holder::protocol::Entry;
    ///
    /// // A `--ttl 4s` stored at 100.3 s, listed a tenth of a second later.
    /// let entry = Entry::parse("web kind=tcp stored=100 expires=105")?;
    /// let now = Duration::from_millis(100_400);
    /// assert_eq!(entry.expires_in(now), Some(Duration::from_secs(4)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn expires_in(&self, now: Duration) -> Option<Duration> {
        let left = Duration::from_secs(self.expires_at?).saturating_sub(now);
        Some(Duration::from_secs(left.as_secs()))
    }

    /// Its line in a `list` answer, newline included.
    #[must_use]
    pub fn line(&self) -> String {
        let mut line = self.name.clone();
        let mut field = |key: &str, value: Option<&dyn fmt::Display>| {
            if let Some(value) = value {
                let _ = write!(line, " {key}={}", escape(&value.to_string()));
            }
        };
        field("kind", Some(&self.kind));
        field("address", self.address.as_ref().map(|v| v as _));
        field("path", self.path.as_ref().map(|v| v as _));
        field("uid", self.stored_by_uid.as_ref().map(|v| v as _));
        field("pid", self.stored_by_pid.as_ref().map(|v| v as _));
        field("stored", self.stored_at.as_ref().map(|v| v as _));
        field("expires", self.expires_at.as_ref().map(|v| v as _));
        field("until-exit", self.until_exit.as_ref().map(|v| v as _));
        line.push('\n');
        line
    }

    /// Parses an entry's line, without its newline.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidData`], saying what is wrong.
    pub fn parse(line: &str) -> io::Result<Entry> {
        let bad = |what: String| io::Error::new(ErrorKind::InvalidData, what);
        let mut words = line.split(' ');
        let name = words.next().unwrap_or_default();
        crate::notify::check_name(name)
            .map_err(|e| bad(format!("the holder listed a bad name: {e}")))?;
        let mut entry = Entry {
            name: name.to_owned(),
            ..Entry::default()
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("the holder listed {:?}", truncated(word))))?;
            let value = unescape(value)?;
            let int = || listed_number(key, &value);
            match key {
                "kind" => entry.kind = value,
                "address" => entry.address = Some(value),
                "path" => entry.path = Some(value),
                "uid" => entry.stored_by_uid = Some(int()?),
                "pid" => entry.stored_by_pid = Some(int()?),
                "stored" => entry.stored_at = Some(listed_number(key, &value)?),
                "expires" => entry.expires_at = Some(listed_number(key, &value)?),
                "until-exit" => entry.until_exit = Some(int()?),
                _ => {}
            }
        }
        Ok(entry)
    }
}

/// A number in a `list` entry.
fn listed_number<T: std::str::FromStr>(key: &str, value: &str) -> io::Result<T> {
    value.parse().map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "the holder listed {key}={:?}, not a number",
                truncated(value)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Store {
                name: name("web"),
                lifetime: Lifetime::forever(),
            },
            Request::Store {
                name: name("w"),
                lifetime: Lifetime::forever()
                    .ttl(Duration::from_secs(90))
                    .until_exit(42),
            },
            Request::Fetch {
                names: vec![name("a"), name("b-2")],
                take: false,
            },
            Request::Fetch {
                names: vec![name("a")],
                take: true,
            },
            Request::Reserve {
                names: vec![name("a"), name("b")],
            },
            Request::List,
            Request::Drop { name: name("x.y") },
        ] {
            let line = request.line();
            assert_eq!(
                Request::parse(line.strip_suffix('\n').unwrap()),
                Ok(request)
            );
        }
    }

    #[test]
    fn a_ttl_is_at_most_max_ttl() {
        let most = Lifetime::MAX_TTL.as_millis();
        let Ok(Request::Store { lifetime, .. }) = Request::parse(&format!("store a ttl-ms={most}"))
        else {
            panic!("the longest ttl is refused");
        };
        assert_eq!(lifetime.ttl, Some(Lifetime::MAX_TTL));
        let refusal = Request::parse(&format!("store a ttl-ms={}", most + 1)).unwrap_err();
        assert!(refusal.to_string().contains("at most"), "{refusal}");
    }

    #[test]
    fn bad_requests_are_refused() {
        let too_many = format!("fetch{}", " a".repeat(MAX_FETCH + 1));
        for line in [
            "",
            "store",
            "store a b",
            "store a ttl-ms=1 ttl-ms=2",
            "store a ttl-ms=3153600000001",
            "store a ttl-ms=18446744073709552000",
            "store a ttl-ms=-1",
            "store a ttl-ms=",
            "store a until-exit=99999999999",
            "list a",
            "fetch",
            "take",
            "reserve",
            "commit",
            "frob a",
            "store a:b",
            "drop",
            "drop a b",
            "drop  a",
            "fetch a ",
            &too_many,
        ] {
            let refusal = Request::parse(line).unwrap_err();
            assert_eq!(refusal.kind, RefusalKind::Invalid, "{line:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(Request::parse("drop web-1.socket_A").is_ok());
        let long = "x".repeat(crate::notify::MAX_NAME + 1);
        for bad in ["a:b", "tab\t", "é", long.as_str()] {
            let refusal = Request::parse(&format!("drop {bad}")).unwrap_err();
            assert_eq!(refusal.kind, RefusalKind::Invalid, "{bad:?}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn devices_are_described_with_their_path() {
        for (kind, word, path) in [
            (
                FdKind::CharDevice(Some("/dev/null".into())),
                "character device",
                Some("/dev/null"),
            ),
            (
                FdKind::BlockDevice(Some("/dev/loop0".into())),
                "block device",
                Some("/dev/loop0"),
            ),
            (FdKind::CharDevice(None), "character device", None),
            (
                FdKind::File(Some("/etc/hosts".into())),
                "file",
                Some("/etc/hosts"),
            ),
            (FdKind::Pipe, "pipe", None),
            (
                FdKind::Other(Some("anon_inode:[eventfd]".into())),
                "other",
                Some("anon_inode:[eventfd]"),
            ),
        ] {
            let entry = Entry::describe("d", &kind);
            assert_eq!(entry.kind, word);
            assert_eq!(entry.path.as_deref(), path);
            let line = entry.line();
            assert_eq!(Entry::parse(line.trim_end()).unwrap(), entry);
        }
    }

    #[test]
    fn entries_round_trip() {
        let full = Entry {
            name: name("web"),
            kind: name("unix stream listener"),
            address: Some(name("/run/my app/%.sock")),
            path: Some(name("é")),
            stored_by_uid: Some(1000),
            stored_by_pid: Some(42),
            stored_at: Some(1_700_000_000),
            expires_at: Some(1_700_000_090),
            until_exit: Some(7),
        };
        let bare = Entry {
            name: name("p"),
            kind: name("pipe"),
            ..Entry::default()
        };
        for entry in [full, bare] {
            let line = entry.line();
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(
                Entry::parse(line.strip_suffix('\n').unwrap()).unwrap(),
                entry
            );
        }
        assert!(Entry::parse("web kind=tcp later=1").is_ok());
        // A kind from a holder newer than this client is taken as it is.
        let newer = Entry::parse("w kind=quantum%20entangler path=/dev/q0").unwrap();
        assert_eq!(
            (newer.kind.as_str(), newer.path),
            ("quantum entangler", Some(name("/dev/q0")))
        );
        for bad in [
            "",
            "a:b kind=x",
            "web kind",
            "web uid=x",
            "web path=%4",
            "web path=%FF",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
