//! `fdpass`: hands open sockets and files between programs, from the shell.
//!
//! It speaks io-fdpass's wire format (Perl's `IO::FDPass`, Python's
//! `socket.send_fds`), and hands fds to commands by the systemd
//! socket-activation convention (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, fds from 3 on).

#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

#[cfg(not(unix))]
compile_error!("fdpass passes fds over unix sockets: it runs on Unix only");

mod adopt;
mod exec;
mod fail;
mod holder;
mod listen;
mod protocol;
mod signals;
mod socket;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::fail::{Failure, Result};
use crate::listen::ListenAddr;
use crate::protocol::{parse_name, Request};
use crate::socket::SocketName;

/// Hand open sockets and files between programs.
///
/// SOCKET is the path of a unix socket, or @NAME for a name in Linux's
/// abstract namespace. Commands that run a COMMAND hand it the fds as fds 3,
/// 4, … with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` set (the systemd
/// socket-activation convention), replacing fdpass in the same process; the
/// command inherits no other fd but 0–2. Commands that connect to SOCKET
/// wait up to a second for a peer that is still starting.
#[derive(Parser)]
#[command(name = "fdpass", version, after_help = fail::TABLE)]
struct Cli {
    /// Log each transfer on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pass fds of this process to the program listening at SOCKET.
    ///
    /// One `IO::FDPass` message per fd (the byte 0 with the fd attached), or
    /// all in one message with --batch.
    #[command(after_help = "Examples:
  fdpass send /run/app.sock 3 3<data.txt
  fdpass send @app 0 1      # this terminal's stdin and stdout")]
    Send {
        socket: SocketName,
        /// Fd numbers, open in the shell that runs fdpass.
        #[arg(required = true, value_parser = clap::value_parser!(i32).range(0..))]
        fds: Vec<i32>,
        /// Send all fds in one message.
        #[arg(long)]
        batch: bool,
    },

    /// Receive fds at SOCKET, then run COMMAND with them.
    ///
    /// Listens at SOCKET (a stale socket file is replaced; anything else at
    /// the path is refused), accepts one connection, receives N fds in
    /// `IO::FDPass` messages (one or several per message) and runs COMMAND.
    #[command(after_help = "Examples:
  fdpass recv /tmp/in.sock -- sh -c 'cat <&3'
  fdpass recv @web -n 2 --name http --name https -- ./server")]
    Recv {
        socket: SocketName,
        /// How many fds to receive.
        #[arg(short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=253))]
        count: u16,
        /// A name for each fd, in order, for `LISTEN_FDNAMES` ("unknown" for
        /// any not named).
        #[arg(long = "name", value_parser = parse_name)]
        names: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },

    /// Open listening sockets, then run COMMAND with them.
    ///
    /// What systemd-socket-activate does, without systemd. ADDR is
    /// tcp:HOST:PORT (an IPv6 HOST in brackets) or unix:SOCKET.
    #[command(after_help = "Examples:
  fdpass listen tcp:127.0.0.1:8080 -- python3 server.py
  fdpass listen tcp:0.0.0.0:80 unix:/run/app.sock --name http --name local -- ./server
  fdpass listen tcp:127.0.0.1:8080 -- fdpass store /run/fds.sock web 3")]
    Listen {
        /// Where to listen.
        #[arg(required = true)]
        addrs: Vec<ListenAddr>,
        /// A name for each socket, in order, for `LISTEN_FDNAMES` (by default
        /// "tcp" or "unix").
        #[arg(long = "name", value_parser = parse_name)]
        names: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },

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
    #[command(after_help = "Examples:
  fdpass fds 4242
  fdpass adopt 4242 tcp:127.0.0.1:8080 --stop-old -- python3 server.py
  fdpass adopt 4242 3 unix:/run/app.sock --name http --name local -- ./server
  fdpass adopt 4242 tcp:0.0.0.0:80 --name web --store /run/fds.sock --stop-old")]
    Adopt(AdoptArgs),

    /// Show the fds process PID holds, one per line.
    ///
    /// Each line has the fd number and what it is: a file and its path, a
    /// pipe, a socket with its family, type, address and whether it
    /// listens (from /proc/PID/fd and /proc/PID/net). The kernel shows them
    /// to a process of PID's user, or to root.
    #[command(after_help = "Examples:
  fdpass fds 4242
  fdpass fds --json $(pgrep -o nginx)")]
    Fds {
        pid: u32,
        /// A JSON array, one object per fd: fd, kind (file, directory,
        /// pipe, socket, other), description, and path; family, type,
        /// listening and local; or name.
        #[arg(long)]
        json: bool,
    },

    /// Hold fds under names while the programs that use them come and go.
    ///
    /// Runs in the foreground until SIGTERM, SIGINT or SIGHUP, and serves
    /// store, fetch, list and drop requests at SOCKET from processes of its
    /// own user (and of --allow-uid). What it holds lives as long as it
    /// does.
    #[command(after_help = "Examples:
  fdpass hold /run/fds.sock &
  fdpass hold @fds --allow-uid 33 --max-names 16")]
    Hold {
        socket: SocketName,
        /// Also serve this user id (repeatable).
        #[arg(long = "allow-uid")]
        allow_uids: Vec<u32>,
        /// The most names held at once.
        #[arg(long, default_value_t = 1024)]
        max_names: usize,
    },

    /// Give fd FD of this process to the holder at SOCKET, under NAME.
    ///
    /// A name already held is replaced.
    #[command(after_help = "Examples:
  fdpass store /run/fds.sock config 3 3</etc/app.conf
  fdpass listen tcp:127.0.0.1:8080 -- fdpass store /run/fds.sock web 3")]
    Store {
        socket: SocketName,
        #[arg(value_parser = parse_name)]
        name: String,
        #[arg(value_parser = clap::value_parser!(i32).range(0..))]
        fd: i32,
    },

    /// Fetch the fds held under NAMEs, then run COMMAND with them.
    ///
    /// The holder keeps its copies; `LISTEN_FDNAMES` is set to the names.
    #[command(after_help = "Examples:
  fdpass fetch /run/fds.sock web -- python3 server.py
  fdpass fetch /run/fds.sock http https -- ./server")]
    Fetch {
        socket: SocketName,
        #[arg(required = true, value_parser = parse_name)]
        names: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },

    /// List the names the holder at SOCKET holds, one per line.
    #[command(after_help = "Example:
  fdpass list /run/fds.sock")]
    List { socket: SocketName },

    /// Close the fd the holder at SOCKET holds under NAME.
    #[command(after_help = "Example:
  fdpass drop /run/fds.sock web")]
    Drop {
        socket: SocketName,
        #[arg(value_parser = parse_name)]
        name: String,
    },
}

/// The arguments of `fdpass adopt`.
#[derive(clap::Args)]
struct AdoptArgs {
    pub pid: u32,
    /// What to take, in order: fd numbers or listening addresses.
    #[arg(required = true)]
    pub what: Vec<adopt::What>,
    /// A name for each fd, in order, for `LISTEN_FDNAMES` or the holder
    /// (by default "tcp", "unix", or "unknown" for an fd number).
    #[arg(long = "name", value_parser = parse_name)]
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
    #[arg(long, value_name = "DURATION", requires = "stop_old", value_parser = adopt::parse_duration)]
    pub ready_after: Option<std::time::Duration>,
    /// The command and its arguments.
    #[arg(
        last = true,
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    pub command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                fail::USAGE
            } else {
                fail::OK
            });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("fdpass: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let verbose = cli.verbose;
    let log = |what: std::fmt::Arguments<'_>| {
        if verbose {
            eprintln!("fdpass: {what}");
        }
    };
    match cli.command {
        Command::Send { socket, fds, batch } => {
            let fds = fds
                .into_iter()
                .map(exec::inherited)
                .collect::<Result<Vec<_>>>()?;
            let stream = socket.connect("the receiver")?;
            let lost = |err| Failure::os(format_args!("cannot send to {socket}"), err);
            if batch {
                io_fdpass::send_with_fds(&stream, &[0], &fds).map_err(lost)?;
                log(format_args!(
                    "sent {} fd(s) in one message to {socket}",
                    fds.len()
                ));
            } else {
                for fd in fds {
                    io_fdpass::send(&stream, fd).map_err(lost)?;
                    log(format_args!("sent fd {} to {socket}", fd.as_raw_fd()));
                }
            }
            Ok(())
        }
        Command::Recv {
            socket,
            count,
            names,
            command,
        } => {
            let names = fd_names(names, usize::from(count), |_| "unknown")?;
            let program = exec::find(&command[0])?;
            let listening = socket.listen()?;
            log(format_args!("waiting for {count} fd(s) at {socket}"));
            let (stream, _) = listening
                .listener
                .accept()
                .map_err(|err| Failure::os(format_args!("cannot accept at {socket}"), err))?;
            let fds = receive(&stream, usize::from(count))
                .map_err(|err| Failure::os(format_args!("receiving at {socket}"), err))?;
            log(format_args!("received {count} fd(s) at {socket}"));
            drop((stream, listening));
            Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
        }
        Command::Listen {
            addrs,
            names,
            command,
        } => {
            let names = fd_names(names, addrs.len(), |i| addrs[i].kind())?;
            let program = exec::find(&command[0])?;
            let bound = addrs
                .iter()
                .map(|addr| {
                    let bound = addr.listen()?;
                    log(format_args!("listening at {addr}"));
                    Ok(bound)
                })
                .collect::<Result<Vec<_>>>()?;
            let fds = bound.into_iter().map(listen::Bound::into_fd).collect();
            Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
        }
        Command::Adopt(args) => adopt::run(&args, verbose),
        Command::Fds { pid, json } => adopt::show_fds(pid, json),
        Command::Hold {
            socket,
            allow_uids,
            max_names,
        } => holder::Holder {
            allow_uids,
            max_names,
            verbose,
        }
        .run(&socket),
        Command::Store { socket, name, fd } => {
            let fd = exec::inherited(fd)?;
            ask(&socket, Request::Store(name.clone()), Some(fd), 0)?;
            log(format_args!(
                "stored fd {} as {name} at {socket}",
                fd.as_raw_fd()
            ));
            Ok(())
        }
        Command::Fetch {
            socket,
            names,
            command,
        } => {
            let program = exec::find(&command[0])?;
            let count = names.len();
            let (_, fds) = ask(&socket, Request::Fetch(names.clone()), None, count)?;
            log(format_args!("fetched {} from {socket}", names.join(" ")));
            Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
        }
        Command::List { socket } => {
            let (names, _) = ask(&socket, Request::List, None, 0)?;
            print!("{names}");
            Ok(())
        }
        Command::Drop { socket, name } => {
            ask(&socket, Request::Drop(name.clone()), None, 0)?;
            log(format_args!("dropped {name} at {socket}"));
            Ok(())
        }
    }
}

/// `given` names, and `default(i)` for each fd `i` not named.
fn fd_names(
    given: Vec<String>,
    fds: usize,
    default: impl Fn(usize) -> &'static str,
) -> Result<Vec<String>> {
    if given.len() > fds {
        return Err(Failure::new(
            fail::USAGE,
            format!("{} names given for {fds} fd(s)", given.len()),
        ));
    }
    let named = given.len();
    Ok(given
        .into_iter()
        .chain((named..fds).map(|i| default(i).to_owned()))
        .collect())
}

/// Connects to the holder at `socket` and makes `request`.
fn ask(
    socket: &SocketName,
    request: Request,
    fd: Option<BorrowedFd<'_>>,
    want_fds: usize,
) -> Result<(String, Vec<OwnedFd>)> {
    let stream = socket.connect(&format!("`fdpass hold {socket}`"))?;
    protocol::ask(&stream, &request, fd, want_fds)
}

/// Receives `count` fds in `IO::FDPass` messages, each carrying one or more.
fn receive(stream: &std::os::unix::net::UnixStream, count: usize) -> std::io::Result<Vec<OwnedFd>> {
    use std::io::{Error, ErrorKind};

    let mut fds: Vec<Option<OwnedFd>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut got = 0;
    while got < count {
        got += io_fdpass::recv_fds(stream, &mut fds[got..]).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => Error::new(
                ErrorKind::UnexpectedEof,
                format!("the sender closed the connection after {got} of {count} fd(s)"),
            ),
            _ => e,
        })?;
    }
    Ok(fds.into_iter().flatten().collect())
}
