//! `fdpass`: hands open sockets and files between programs, from the shell.
//!
//! It speaks io-fdpass's wire format (Perl's `IO::FDPass`, Python's
//! `socket.send_fds`), and hands fds to commands by the systemd
//! socket-activation convention (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, fds from 3 on).
//!
//! `main` parses the command line (`cli` defines it; `quick` reads the
//! holder's hot command lines without clap) and runs one module of
//! `commands`, one per subcommand; every error becomes a message and an
//! exit status (`fail`). Below the commands stand the helpers they share:
//! `address` (socket names and listening addresses), `client` (the
//! holder's client), `exec` (the `LISTEN_*` layout), `output`, and `hint`.

#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
// The start is fdpass's own there (see `start`).
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]

#[cfg_attr(windows, path = "address_windows.rs")]
mod address;
mod cli;
mod client;
mod commands;
mod exec;
mod fail;
mod hint;
mod output;
#[cfg(unix)]
mod quick;
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
mod start;

use std::ffi::OsString;

use clap::Parser;

use crate::cli::{Cli, Command, LogArgs};
use crate::fail::Result;
use crate::output::Log;

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(test))))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(status())
}

/// The whole command: its exit status.
fn status() -> u8 {
    let args: Vec<OsString> = std::env::args_os().collect();
    #[cfg(unix)]
    let parsed = quick::quick(&args).map_or_else(|| Cli::try_parse_from(&args), Ok);
    #[cfg(windows)]
    let parsed = Cli::try_parse_from(&args);
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => return refused(&err, &args),
    };
    match run(cli) {
        Ok(()) => fail::OK,
        // The command run said what it had to: its exit status is passed on.
        Err(failure) if failure.message.is_empty() => failure.code,
        Err(failure) if output::message(format_args!("{failure}")) => failure.code,
        Err(_) => fail::IO,
    }
}

/// Shows what clap says of a command line it refused (or the help or
/// version asked for), with a hint where one helps; the exit status.
fn refused(err: &clap::Error, args: &[OsString]) -> u8 {
    let text = err.render().to_string();
    if !err.use_stderr() {
        return match output::print(&text) {
            Ok(()) => fail::OK,
            Err(failure) => {
                output::message(format_args!("{failure}"));
                failure.code
            }
        };
    }
    let hint = hint::separator_hint(args);
    if output::to_stderr(&text) && hint.is_none_or(|hint| output::message(format_args!("{hint}"))) {
        fail::USAGE
    } else {
        fail::IO
    }
}

/// Runs the subcommand the command line names.
fn run(cli: Cli) -> Result<()> {
    // `-v` before the subcommand counts for any that logs.
    let log = |args: &LogArgs| Log {
        verbose: cli.verbose || args.verbose,
    };
    match cli.command {
        #[cfg(unix)]
        Command::Send(args) => commands::send::run(&args, log(&args.log)),
        #[cfg(unix)]
        Command::Recv(args) => {
            let log = log(&args.log);
            commands::recv::run(args, log)
        }
        #[cfg(unix)]
        Command::Adopt(args) => commands::adopt::run(&args, log(&args.log)),
        #[cfg(unix)]
        Command::Fds(args) => commands::fds::run(&args),
        #[cfg(windows)]
        Command::Send(_) => Err(fail::not_on_windows(
            "send",
            "it passes fds over a unix socket",
        )),
        #[cfg(windows)]
        Command::Recv(_) => Err(fail::not_on_windows(
            "recv",
            "it receives fds over a unix socket",
        )),
        #[cfg(windows)]
        Command::Adopt(_) => Err(fail::not_on_windows(
            "adopt",
            "it copies another process's fds (pidfd_getfd), which Windows cannot do for sockets",
        )),
        #[cfg(windows)]
        Command::Fds(_) => Err(fail::not_on_windows(
            "fds",
            "it lists a process's fds by number",
        )),
        Command::Listen(args) => {
            let log = log(&args.log);
            commands::listen::run(args, log)
        }
        Command::Hold(args) => commands::hold::run(&args, log(&args.log)),
        Command::Store(args) => commands::store::run(&args, log(&args.log)),
        Command::Fetch(args) => commands::fetch::run(&args),
        Command::List(args) => commands::list::run(&args),
        Command::Drop(args) => commands::drop::run(&args, log(&args.log)),
        Command::Completions(args) => commands::completions::run(&args),
        Command::Man(args) => commands::man::run(&args),
        Command::Help(args) => commands::help::run(&args),
    }
}
