//! `fdpass`: hands open sockets and files between programs, from the shell.
//!
//! It speaks io-fdpass's wire format (Perl's `IO::FDPass`, Python's
//! `socket.send_fds`), and hands fds to commands by the systemd
//! socket-activation convention (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, fds from 3 on).
//!
//! One file per part: `cli` (every flag), `address` (socket names and
//! listening addresses), `exec` (the `LISTEN_*` layout), `transfer` (send
//! and recv), `client` (the holder's client commands), `holder` (the
//! holder), `adopt` (adopt and fds), `shell` (completions, manual pages,
//! hints), `fail` and `output`.

#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
// The start is fdpass's own there (see `start`).
#![cfg_attr(all(target_os = "linux", target_env = "gnu"), no_main)]

#[cfg(not(unix))]
compile_error!("fdpass passes fds over unix sockets: it runs on Unix only");

mod address;
mod adopt;
mod cli;
mod client;
mod exec;
mod fail;
mod holder;
mod output;
mod shell;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod start;
mod transfer;

use std::ffi::OsString;
use std::os::fd::AsRawFd;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::fail::{Failure, Result};

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(status())
}

/// The whole command: its exit status.
fn status() -> u8 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::quick(&args).map_or_else(|| Cli::try_parse_from(&args), Ok) {
        Ok(cli) => cli,
        Err(err) => return refused(&err, &args),
    };
    match run(cli) {
        Ok(()) => fail::OK,
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
    let hint = shell::separator_hint(args);
    if output::to_stderr(&text) && hint.is_none_or(|hint| output::message(format_args!("{hint}"))) {
        fail::USAGE
    } else {
        fail::IO
    }
}

fn run(cli: Cli) -> Result<()> {
    let verbose = cli.verbose;
    let log = |what: std::fmt::Arguments<'_>| {
        if verbose {
            output::message(what);
        }
    };
    match cli.command {
        Command::Send {
            socket,
            fds,
            batch,
            receiver_uids,
            timeout,
        } => transfer::send(&socket, &fds, batch, &receiver_uids, timeout, log),
        Command::Recv {
            socket,
            count,
            names,
            allow_uids,
            timeout,
            command,
        } => Err(transfer::recv(
            &socket,
            usize::from(count),
            names,
            &allow_uids,
            timeout,
            &command,
            log,
        )?),
        Command::Listen {
            addrs,
            names,
            command,
        } => {
            let names = exec::fd_names(names, addrs.len(), |i| addrs[i].kind())?;
            let program = exec::find(&command[0])?;
            let bound = addrs
                .iter()
                .map(|addr| {
                    let bound = addr.listen()?;
                    log(format_args!("listening at {addr}"));
                    Ok(bound)
                })
                .collect::<Result<Vec<_>>>()?;
            let fds = bound.into_iter().map(address::Bound::into_fd).collect();
            Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
        }
        Command::Adopt(args) => adopt::run(&args, verbose),
        Command::Fds { pid, json } => adopt::show_fds(pid, json),
        Command::Hold(args) => holder::run(&args, verbose),
        Command::Store {
            holder,
            name,
            fd,
            ttl,
            until_exit,
        } => {
            let fd = exec::inherited(fd)?;
            client::run_store(&holder, &name, fd, ttl, until_exit)?;
            log(format_args!(
                "stored fd {} as {name} at {}",
                fd.as_raw_fd(),
                holder.socket
            ));
            Ok(())
        }
        Command::Fetch {
            holder,
            names,
            take,
            command,
        } => {
            let failure: Failure = client::run_fetch(&holder, &names, take, &command)?;
            Err(failure)
        }
        Command::List { holder, json } => client::run_list(&holder, json),
        Command::Drop { holder, name } => {
            client::run_drop(&holder, &name)?;
            log(format_args!("dropped {name} at {}", holder.socket));
            Ok(())
        }
        Command::Completions { shell } => shell::completions(shell),
        Command::Man { dir } => shell::man(dir.as_deref(), log),
    }
}
