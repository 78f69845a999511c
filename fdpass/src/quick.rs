//! The holder's hot command lines, read without clap.

use std::ffi::OsString;

use crate::cli::{parse_name, Cli, Command, DropArgs, FetchArgs, HolderArgs, LogArgs, StoreArgs};

/// The holder's hot commands, `store SOCKET NAME FD`, `fetch SOCKET
/// NAME... -- COMMAND...` and `drop SOCKET NAME`, with no flags, read
/// without clap: these are what a server's start and stop run, and clap's
/// setup is a fifth of such a process's time (measured against
/// s6-fdholderd's clients, fdpass/benches/holder.rs). Anything else, or
/// anything these would refuse, is `None`, for clap to read and explain.
/// A test holds this to clap's reading of the same lines.
pub fn quick(args: &[OsString]) -> Option<Cli> {
    let mut words = args.get(1..)?.iter().map(|arg| arg.to_str());
    let verb = words.next()??;
    let socket = words.next()??;
    if socket.starts_with('-') {
        return None;
    }
    let holder = HolderArgs {
        socket: socket.parse().ok()?,
        timeout: io_fdpass::holder::DEFAULT_TIMEOUT,
        holder_uids: Vec::new(),
    };
    let name = |word: Option<&str>| {
        word.filter(|w| !w.starts_with('-'))
            .and_then(|w| parse_name(w).ok())
    };
    let command = match verb {
        "store" => {
            let name = name(words.next()?)?;
            let fd = words.next()??;
            if words.next().is_some() || !fd.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Command::Store(StoreArgs {
                holder,
                name,
                fd: fd.parse().ok()?,
                ttl: None,
                until_exit: None,
                log: LogArgs::default(),
            })
        }
        "drop" => {
            let name = name(words.next()?)?;
            if words.next().is_some() {
                return None;
            }
            Command::Drop(DropArgs {
                holder,
                name,
                log: LogArgs::default(),
            })
        }
        "fetch" => {
            let names: Vec<String> = words
                .by_ref()
                .take_while(|w| *w != Some("--"))
                .map(name)
                .collect::<Option<_>>()?;
            let separator = args.get(names.len() + 3)?;
            let command: Vec<OsString> = args.get(names.len() + 4..)?.to_vec();
            if names.is_empty() || command.is_empty() || separator != "--" {
                return None;
            }
            Command::Fetch(FetchArgs {
                holder,
                names,
                take: false,
                command,
            })
        }
        _ => return None,
    };
    Some(Cli {
        verbose: false,
        command,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_quick_reading_is_clap_s() {
        for line in [
            "fdpass store /tmp/h.sock web 3",
            "fdpass store @h web 0",
            "fdpass drop /tmp/h.sock web",
            "fdpass fetch /tmp/h.sock web -- ./server --port 80",
            "fdpass fetch /tmp/h.sock a b -- sh -c x",
            "fdpass fetch /tmp/h.sock a -- --",
            // Left to clap: flags, bad values, missing or extra words.
            "fdpass store /tmp/h.sock web 3 --ttl 5m",
            "fdpass store /tmp/h.sock web -3",
            "fdpass store /tmp/h.sock web 3x",
            "fdpass store /tmp/h.sock a:b 3",
            "fdpass store /tmp/h.sock web",
            "fdpass store /tmp/h.sock web 3 4",
            "fdpass store --timeout 1s /tmp/h.sock web 3",
            "fdpass -v store /tmp/h.sock web 3",
            "fdpass drop /tmp/h.sock",
            "fdpass drop /tmp/h.sock -h",
            "fdpass fetch /tmp/h.sock web ./server",
            "fdpass fetch /tmp/h.sock -- ./server",
            "fdpass fetch /tmp/h.sock web --",
            "fdpass fetch /tmp/h.sock --take web -- x",
            "fdpass list /tmp/h.sock",
            "fdpass store @ web 3",
            "fdpass",
        ] {
            let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
            let clap = Cli::try_parse_from(&args).map(|cli| format!("{cli:?}"));
            if let Some(quick) = quick(&args) {
                assert_eq!(Ok(format!("{quick:?}")), clap.map_err(|_| ()), "{line}");
            }
        }
        let hot =
            |line: &str| quick(&line.split(' ').map(OsString::from).collect::<Vec<_>>()).is_some();
        assert!(hot("fdpass store /tmp/h.sock web 3"));
        assert!(hot("fdpass fetch /tmp/h.sock a b -- sh -c x"));
        assert!(hot("fdpass drop /tmp/h.sock web"));
    }
}
