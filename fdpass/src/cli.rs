//! The command line: every subcommand, flag and value parser, in one place.

use std::ffi::OsString;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::address::{ListenAddr, SocketName, What};
use crate::fail;

/// How long a client command waits by default, for the whole exchange:
/// the library's `io_fdpass::holder::DEFAULT_TIMEOUT`, written as
/// `--timeout` takes it, for clap's default and the help. Made only when
/// clap builds a command that has it.
static DEFAULT_TIMEOUT: LazyLock<String> =
    LazyLock::new(|| format_duration(io_fdpass::holder::DEFAULT_TIMEOUT));

/// Hand open sockets and files between programs.
///
/// SOCKET is the path of a unix socket, or @NAME for a name in Linux's
/// abstract namespace. An abstract name has no file permissions, and any
/// local user may take it first: every command that connects checks the
/// uid of the process it reaches (it must be this user's, root's, or one
/// allowed with a flag), and that check is what protects an abstract name.
/// Commands that run a COMMAND hand it the fds as fds 3, 4, … with
/// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` set (the systemd
/// socket-activation convention), replacing fdpass in the same process; the
/// command inherits no other fd but 0–2. Commands that connect to SOCKET
/// wait up to a second for a peer that is still starting.
#[derive(Parser, Debug)]
#[command(
    name = "fdpass",
    version,
    after_help = fail::TABLE,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// `-v` before the subcommand, as earlier versions took it (and as a
    /// holder started so re-executes itself on upgrade): the same as the
    /// subcommand's own `-v`, and hidden, as it is offered only by the
    /// subcommands that log.
    #[arg(short, long, hide = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

// Each subcommand's arguments are built only when it runs (or for help,
// completions and manual pages): each run is a process of its own, and
// building every subcommand took about 60 of the 130 µs clap spent on a
// `store` command line.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Pass fds of this process to the program listening at SOCKET.
    ///
    /// One `IO::FDPass` message per fd (the byte 0 with the fd attached), or
    /// all in one message with --batch. The receiver must run as this user
    /// or root, or one named with --receiver-uid. Waits, up to --timeout,
    /// until the receiver has read what was sent, or has said why not: an
    /// `fdpass recv` that turns this user away says so, and the send fails
    /// with its reason (77). An fdpass holder is not a receiver: use
    /// `fdpass store`.
    #[command(after_help = "Examples:
  fdpass send /run/app.sock 3 3<data.txt
  fdpass send @app 0 1      # this terminal's stdin and stdout")]
    Send(SendArgs),

    /// Receive fds at SOCKET, then run COMMAND with them.
    ///
    /// Listens at SOCKET (a stale socket file is replaced; anything else at
    /// the path is refused), accepts a connection from a sender of this
    /// user, root, or a uid named with --allow-uid (others are turned
    /// away, told why in a line that `fdpass send` shows), receives N fds
    /// in `IO::FDPass` messages (one or several per message) and runs
    /// COMMAND. Gives up, removing SOCKET, after --timeout.
    #[command(after_help = "Examples:
  fdpass recv /tmp/in.sock -- sh -c 'cat <&3'
  fdpass recv @web -n 2 --name http --name https -- ./server")]
    Recv(RecvArgs),

    /// Open listening sockets, then run COMMAND with them.
    ///
    /// What systemd-socket-activate does, without systemd. ADDR is
    /// tcp:HOST:PORT (an IPv6 HOST in brackets) or unix:SOCKET.
    #[command(after_help = "Examples:
  fdpass listen tcp:127.0.0.1:8080 -- python3 server.py
  fdpass listen tcp:0.0.0.0:80 unix:/run/app.sock --name http --name local -- ./server
  fdpass listen tcp:127.0.0.1:8080 -- fdpass store /run/fds.sock web 3")]
    Listen(ListenArgs),

    /// Take fds from running process PID, then run COMMAND with them.
    ///
    /// For a server that cannot hand over its socket: WHAT is an fd number
    /// of PID, or tcp:HOST:PORT or unix:SOCKET for the socket PID listens
    /// on there. Copies of them are taken out of PID (`pidfd_getfd`, Linux 5.6
    /// and later), which the kernel allows to a process of PID's user (uid
    /// and gid), under `kernel.yama.ptrace_scope` 0 (at 1, only to an
    /// ancestor of PID), or to one with `CAP_SYS_PTRACE`. PID is not told,
    /// and goes on serving; COMMAND gets the copies as with `fdpass listen`,
    /// and the two share the connections until one stops. With --stop-old,
    /// COMMAND has `NOTIFY_SOCKET` set to a socket of fdpass's, and PID is
    /// sent SIGTERM once COMMAND sends READY=1 there (`sd_notify`), or once
    /// --ready-after has passed; if COMMAND exits first, PID is left alone.
    /// Run by systemd (`NOTIFY_SOCKET` set), COMMAND keeps systemd's
    /// `NOTIFY_SOCKET`, and fdpass's socket is named by
    /// `IO_FDPASS_READY_SOCKET` instead; once COMMAND is ready, fdpass tells
    /// systemd `READY=1` and `MAINPID=` COMMAND (the unit needs
    /// `NotifyAccess=all`).
    #[command(after_help = "Examples:
  fdpass fds 4242
  fdpass adopt 4242 tcp:127.0.0.1:8080 --stop-old -- python3 server.py
  fdpass adopt 4242 3 unix:/run/app.sock --name http --name local -- ./server
  fdpass adopt 4242 tcp:0.0.0.0:80 --name web --store /run/fds.sock --stop-old")]
    Adopt(AdoptArgs),

    /// Show the fds process PID holds, one per line.
    ///
    /// Each line has the fd number and what it is: a file or a device and
    /// its path, a pipe, a socket with its family, type, address and
    /// whether it listens (from /proc/PID/fd and /proc/PID/net). The kernel
    /// shows them to a process of PID's user, or to root.
    #[command(after_help = "Examples:
  fdpass fds 4242
  fdpass fds --json $(pgrep -o nginx)")]
    Fds(FdsArgs),

    /// Hold fds under names while the programs that use them come and go.
    ///
    /// Serves store, fetch, take, list and drop requests at SOCKET in the
    /// foreground, until SIGTERM or SIGINT. SOCKET is created with mode
    /// 0600 unless --mode says otherwise; --allow-uid opens it to others
    /// (o+rw) and --allow-gid to the group, since the holder itself turns
    /// away every other uid and gid as soon as it connects. Each client has
    /// --client-timeout for its whole request, and a client that is slow or
    /// silent holds up no other.
    ///
    /// Nothing held is lost when the holder restarts: SIGHUP makes it
    /// execute its own binary again (the same path, so a newer installed
    /// version takes over) with every fd, its name and lifetime, and the
    /// listening socket, so no client is refused meanwhile. At start it
    /// adopts `LISTEN_FDS`: `fdpass-hold` as its socket, `fdpass-hold-state`
    /// as the record of names and lifetimes, and every other name as a held
    /// fd. Under systemd (`NOTIFY_SOCKET` set) it sends READY=1 once it
    /// listens, and keeps each fd, its socket and that record in the
    /// service's fd store too, so that even `kill -9` loses nothing (see
    /// fdpass-hold.service among the examples). A fetched fd shares its
    /// open file description with the held one: a file's offset moves for
    /// every fetch of it.
    #[command(after_help = "Examples:
  fdpass hold /run/fds.sock &
  fdpass hold /run/fds.sock --allow-gid www-data --max-names 16
  fdpass hold /run/new.sock --from /run/fds.sock
  fdpass hold /run/fds.sock & echo $! > /run/fdpass-hold.pid
  kill -HUP $(cat /run/fdpass-hold.pid)   # upgrade in place, holding on to every fd
  systemctl reload fdpass-hold   # the same under systemd (ExecReload=kill -HUP $MAINPID)")]
    Hold(HoldArgs),

    /// Give fd FD of this process to the holder at SOCKET, under NAME.
    ///
    /// A name already held is replaced.
    #[command(after_help = "Examples:
  fdpass store /run/fds.sock config 3 3</etc/app.conf
  fdpass store /run/fds.sock handover 3 --ttl 5m 3<&0
  fdpass listen tcp:127.0.0.1:8080 -- fdpass store /run/fds.sock web 3")]
    Store(StoreArgs),

    /// Fetch the fds held under NAMEs, then run COMMAND with them.
    ///
    /// The holder keeps its copies unless --take; `LISTEN_FDNAMES` is set
    /// to the names. A fetched fd shares its open file description, and
    /// with it a file's offset, with the one held.
    #[command(after_help = "Examples:
  fdpass fetch /run/fds.sock web -- python3 server.py
  fdpass fetch /run/fds.sock http https -- ./server
  fdpass fetch --take /run/fds.sock handover -- ./worker")]
    Fetch(FetchArgs),

    /// List what the holder at SOCKET holds, one name per line.
    ///
    /// Each line starts with the name, then says what the fd is, who stored
    /// it and when, and its lifetime.
    #[command(after_help = "Examples:
  fdpass list /run/fds.sock
  fdpass list --json /run/fds.sock")]
    List(ListArgs),

    /// Close the fd the holder at SOCKET holds under NAME.
    #[command(after_help = "Example:
  fdpass drop /run/fds.sock web")]
    Drop(DropArgs),

    /// Print a completion script for SHELL on stdout.
    ///
    /// Source it in the shell, or put it where the shell loads completions
    /// from.
    #[command(after_help = "Examples:
  fdpass completions bash > ~/.local/share/bash-completion/completions/fdpass
  fdpass completions zsh > ~/.zfunc/_fdpass     # with fpath+=~/.zfunc
  fdpass completions fish > ~/.config/fish/completions/fdpass.fish")]
    Completions(CompletionsArgs),

    /// Print the manual page fdpass(1) on stdout, or write every page.
    ///
    /// fdpass.1 describes the whole tool and lists the subcommands; with
    /// --dir, it is written to DIR with a page for each subcommand
    /// (fdpass-hold.1, fdpass-store.1, …).
    #[command(after_help = "Examples:
  fdpass man | man -l -
  sudo fdpass man --dir /usr/local/share/man/man1")]
    Man(ManArgs),

    /// Print the help of fdpass, or of COMMAND.
    ///
    /// The same as `fdpass --help` and `fdpass COMMAND --help`.
    #[command(after_help = "Examples:
  fdpass help
  fdpass help store")]
    Help(HelpArgs),
}

// The arguments of `fdpass send` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The receiver's socket: a path, or @NAME in the abstract namespace.
    pub socket: SocketName,
    /// Fd numbers, open in the shell that runs fdpass.
    #[arg(required = true, value_parser = clap::value_parser!(i32).range(0..))]
    pub fds: Vec<i32>,
    /// Send all fds in one message.
    #[arg(long)]
    pub batch: bool,
    /// Also trust a receiver running as this uid (repeatable).
    #[arg(long = "receiver-uid", value_name = "UID")]
    pub receiver_uids: Vec<u32>,
    /// Give up after this long (e.g. 500ms, 5s, 1m).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT.as_str(), value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass recv` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Where to listen: a path, or @NAME in the abstract namespace.
    pub socket: SocketName,
    /// How many fds to receive.
    #[arg(short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=253))]
    pub count: u16,
    /// A name for each fd, in order, for `LISTEN_FDNAMES` ("unknown" for
    /// any not named).
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<String>,
    /// Also accept fds from this uid (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
    /// Give up after this long without every fd (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass listen` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Where to listen.
    #[arg(required = true)]
    pub addrs: Vec<ListenAddr>,
    /// A name for each socket, in order, for `LISTEN_FDNAMES` (by default
    /// "tcp" or "unix").
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass fds` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct FdsArgs {
    /// The process whose fds to show.
    pub pid: u32,
    /// A JSON array, one object per fd: fd, kind (file, directory,
    /// pipe, socket, character device, block device, other),
    /// description, and path; family, type, listening and local; or name.
    #[arg(long)]
    pub json: bool,
}

// The arguments of `fdpass store` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// The name to hold it under (replacing one held under it).
    #[arg(value_parser = parse_name)]
    pub name: String,
    /// The fd number, open in the shell that runs fdpass.
    #[cfg(unix)]
    #[arg(value_parser = clap::value_parser!(i32).range(0..))]
    pub fd: i32,
    /// Drop it after this long (90, 90s, 5m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Drop it when process PID exits.
    #[arg(long, value_name = "PID")]
    pub until_exit: Option<u32>,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass fetch` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// The names of the fds, which COMMAND gets as 3, 4, … in this order.
    #[arg(required = true, value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<String>,
    /// Remove the names from the holder as they are fetched.
    #[arg(long)]
    pub take: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

// The arguments of `fdpass list` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// A JSON array, one object per name: `name`, `kind`, `address`
    /// (null when not a socket), `path`, `stored_by_uid`,
    /// `stored_by_pid`, `stored_at` and `expires_at` (unix seconds or
    /// null), `until_exit` (pid or null).
    #[arg(long)]
    pub json: bool,
}

// The arguments of `fdpass drop` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct DropArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// The name whose fd to close.
    #[arg(value_parser = parse_name)]
    pub name: String,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass completions` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

// The arguments of `fdpass man` (not a doc comment, which clap
// would show instead of the command's own about).
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write fdpass.1 and the subcommands' pages into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

// The arguments of `fdpass help` (not a doc comment, as above).
#[derive(Args, Debug)]
pub struct HelpArgs {
    /// The subcommand whose help to print.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

// The holder a client command talks to, and how. (Not a doc comment:
// clap would show it as the about of each command it is flattened into.)
#[derive(Args, Debug)]
pub struct HolderArgs {
    /// The holder's socket: a path, or @NAME in the abstract namespace.
    #[cfg(unix)]
    pub socket: SocketName,
    /// The holder's address: a path (`AF_UNIX`, Windows 10 1803 and later),
    /// or tcp:127.0.0.1:PORT.
    #[cfg(windows)]
    pub socket: SocketName,
    /// Give up after this long (e.g. 500ms, 5s, 1m).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT.as_str(), value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Also trust a holder running as this uid (repeatable); by default
    /// only one of this user or root.
    #[cfg(unix)]
    #[arg(long = "holder-uid", value_name = "UID")]
    pub holder_uids: Vec<u32>,
    /// Also trust a holder running as the user of this SID (repeatable);
    /// by default only one of this user or SYSTEM.
    #[cfg(windows)]
    #[arg(long = "holder-user", value_name = "SID")]
    pub holder_users: Vec<String>,
}

// `-v`, on the subcommands that have something to log. (Not a doc
// comment, as above.)
#[derive(Args, Debug, Default)]
pub struct LogArgs {
    /// Log each step on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

// The arguments of `fdpass hold` (not a doc comment, which clap would
// show instead of the command's own about).
#[derive(Args, Debug)]
pub struct HoldArgs {
    /// Where to listen: a path, or @NAME in the abstract namespace.
    #[cfg(unix)]
    pub socket: SocketName,
    /// Where to listen: a path (`AF_UNIX`, Windows 10 1803 and later), or
    /// tcp:127.0.0.1:PORT.
    #[cfg(windows)]
    pub socket: SocketName,
    /// Also serve this user id (repeatable).
    #[cfg(unix)]
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
    /// Also serve this group, by name or number (repeatable).
    #[cfg(unix)]
    #[arg(long = "allow-gid", value_name = "GROUP")]
    pub allow_gids: Vec<String>,
    /// Also serve the user of this SID (repeatable).
    #[cfg(windows)]
    #[arg(long = "allow-user", value_name = "SID")]
    pub allow_users: Vec<String>,
    /// The socket file's mode, in octal (default 0600, widened for
    /// --allow-uid and --allow-gid).
    #[cfg(unix)]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,
    /// The socket file's group, by name or number (default: the first
    /// --allow-gid).
    #[cfg(unix)]
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// The most names held at once.
    #[arg(long, default_value_t = 1024)]
    pub max_names: usize,
    /// Take over every fd the holder at `OTHER_SOCKET` holds, with its name
    /// and lifetime, before serving (that holder keeps its copies).
    #[cfg(unix)]
    #[arg(long, value_name = "OTHER_SOCKET")]
    pub from: Option<SocketName>,
    /// How long a client has for its whole request and answer.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT.as_str(), value_parser = parse_timeout)]
    pub client_timeout: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

// The arguments of `fdpass adopt` (not a doc comment, as above).
#[derive(Args, Debug)]
pub struct AdoptArgs {
    /// The running process to take the fds from.
    pub pid: u32,
    /// What to take, in order: fd numbers or listening addresses.
    #[arg(required = true)]
    pub what: Vec<What>,
    /// A name for each fd, in order, for `LISTEN_FDNAMES` or the holder
    /// (by default "tcp", "unix", or "unknown" for an fd number).
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<String>,
    /// Store the fds in the holder at `HOLDER_SOCKET` under their names
    /// instead of running a command.
    #[arg(long, value_name = "HOLDER_SOCKET", conflicts_with = "ready_after")]
    pub store: Option<SocketName>,
    /// Send SIGTERM to PID once COMMAND is ready (with --store, once
    /// the holder has the fds).
    #[arg(long)]
    pub stop_old: bool,
    /// Take COMMAND to be ready this long after it starts, if it has not
    /// said READY=1 by then (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION", requires = "stop_old", value_parser = parse_duration)]
    pub ready_after: Option<Duration>,
    /// The command and its arguments.
    #[arg(
        last = true,
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Checks a name for an fd: what `LISTEN_FDNAMES` and systemd's fd store
/// can carry, and a word of the holder protocol.
pub fn parse_name(name: &str) -> Result<String, String> {
    io_fdpass::notify::check_name(name)
        .map(|()| name.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a duration: a number of seconds, or a number with `ms`, `s`,
/// `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{unit:?} is not a unit: use ms, s, m or h, e.g. 500ms"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration, such as 500ms, 2s or 1m"))?;
    Duration::try_from_secs_f64(number * scale).map_err(|_| format!("{text:?} is too long"))
}

/// Parses a timeout: a duration longer than zero, which would give up
/// before trying.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "{text:?} would give up at once: give a timeout longer than zero, e.g. 5s"
        )),
        timeout => Ok(timeout),
    }
}

/// Parses a lifetime for a held fd: longer than zero, which would drop it
/// at once, and at most what a holder keeps
/// (`io_fdpass::holder::protocol::Lifetime::MAX_TTL`).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    use io_fdpass::holder::protocol::Lifetime;
    match parse_duration(text)? {
        // The holder counts in milliseconds.
        ttl if ttl < Duration::from_millis(1) => Err(format!(
            "{text:?} would drop the fd at once: give a lifetime longer than zero, e.g. 5m"
        )),
        ttl if ttl > Lifetime::MAX_TTL => Err(format!(
            "{text:?} is longer than a holder keeps an fd: at most {}h (100 years)",
            Lifetime::MAX_TTL.as_secs() / 3600
        )),
        ttl => Ok(ttl),
    }
}

/// Writes a duration as [`parse_duration`] reads it: `5s`, `500ms`,
/// `1.5s`.
fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Parses a file mode in octal: `600`, `0660`, `0o666`.
#[cfg(unix)]
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not a file mode: give permission bits in octal, e.g. 0660"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, ms) in [
            ("90", 90_000),
            ("90s", 90_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("0", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "s", "5d", "-1s", "1e400", "1.2.3s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeouts_and_lifetimes_are_longer_than_zero_and_bounded() {
        use io_fdpass::holder::protocol::Lifetime;
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ttl("4s"), Ok(Duration::from_secs(4)));
        for zero in ["0", "0s", "0ms", "0.0"] {
            let timeout = parse_timeout(zero).unwrap_err();
            assert!(timeout.contains("longer than zero"), "{timeout}");
        }
        // Less than the holder's millisecond is no lifetime at all.
        for zero in ["0", "0s", "0ms", "0.0001ms"] {
            let ttl = parse_ttl(zero).unwrap_err();
            assert!(ttl.contains("longer than zero"), "{ttl}");
        }
        let most = format!("{}s", Lifetime::MAX_TTL.as_secs());
        assert_eq!(parse_ttl(&most), Ok(Lifetime::MAX_TTL));
        for long in ["18446744073709551", "3155760001s"] {
            let err = parse_ttl(long).unwrap_err();
            assert!(err.contains("at most"), "{err}");
        }
    }

    #[test]
    fn the_default_timeout_is_the_library_s() {
        assert_eq!(
            parse_duration(&DEFAULT_TIMEOUT),
            Ok(io_fdpass::holder::DEFAULT_TIMEOUT)
        );
        for ms in [0, 1, 500, 1500, 5000, 90_000] {
            let duration = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let store = cli.find_subcommand("store").unwrap();
        let timeout = store
            .get_arguments()
            .find(|arg| arg.get_id() == "timeout")
            .unwrap();
        assert_eq!(timeout.get_default_values(), [DEFAULT_TIMEOUT.as_str()]);
    }

    #[test]
    #[cfg(unix)]
    fn modes_are_octal() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        for bad in ["", "8", "1777", "rw"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(parse_name("web-1.socket_A").is_ok());
        for bad in ["", "a:b", "a b", "tab\t", "é"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
