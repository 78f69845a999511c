//! The holder's client commands, `store`, `fetch`, `list` and `drop`,
//! through the library's holder client.

use std::ffi::OsString;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use io_fdpass::holder::protocol::{Entry, Lifetime, Refusal};
use io_fdpass::holder::Client;
use io_fdpass::PeerTrust;

use crate::address::{SocketName, STARTUP_GRACE};
use crate::cli::HolderArgs;
use crate::exec;
use crate::fail::{self, Failure, Party, Result};
use crate::output::{json_or_null, json_string};

/// The library's client for the holder at `socket`.
pub fn client(socket: &SocketName, timeout: Duration, holder_uids: &[u32]) -> Client {
    Client::new(socket.client_path())
        .timeout(timeout)
        .startup_grace(STARTUP_GRACE)
        .trust(PeerTrust::new().allow_uids(holder_uids.iter().copied()))
}

fn of(args: &HolderArgs) -> Client {
    client(&args.socket, args.timeout, &args.holder_uids)
}

/// `fdpass store`.
pub fn store(
    client: &Client,
    socket: &SocketName,
    name: &str,
    fd: BorrowedFd<'_>,
    lifetime: Lifetime,
) -> Result<()> {
    client
        .store_for(name, fd, lifetime)
        .map_err(|e| failure(socket, &e))
}

/// `fdpass store` from the command line.
pub fn run_store(
    args: &HolderArgs,
    name: &str,
    fd: BorrowedFd<'_>,
    ttl: Option<Duration>,
    until_exit: Option<u32>,
) -> Result<()> {
    let mut lifetime = Lifetime::forever();
    if let Some(ttl) = ttl {
        lifetime = lifetime.ttl(ttl);
    }
    if let Some(pid) = until_exit {
        lifetime = lifetime.until_exit(pid);
    }
    store(&of(args), &args.socket, name, fd, lifetime)
}

/// `fdpass fetch`: fetches (or takes) the names, then runs the command.
pub fn run_fetch(
    args: &HolderArgs,
    names: &[String],
    take: bool,
    command: &[OsString],
) -> Result<Failure> {
    let program = exec::find(&command[0])?;
    let client = of(args);
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let fds = if take {
        client.take(&wanted)
    } else {
        client.fetch_many(&wanted)
    }
    .map_err(|e| failure(&args.socket, &e))?;
    Ok(exec::exec_with_fds(fds, names, &program, command, &[]))
}

/// `fdpass list`: the entries, as lines or JSON.
pub fn run_list(args: &HolderArgs, json: bool) -> Result<()> {
    let entries = of(args).entries().map_err(|e| failure(&args.socket, &e))?;
    let now = crate::holder::unix_now().as_secs();
    let text = if json {
        let objects: Vec<String> = entries.iter().map(json_entry).collect();
        if objects.is_empty() {
            "[]\n".to_owned()
        } else {
            format!("[\n{}\n]\n", objects.join(",\n"))
        }
    } else {
        entries.iter().map(|e| line(e, now)).collect()
    };
    crate::output::print(&text)
}

/// `fdpass drop`.
pub fn run_drop(args: &HolderArgs, name: &str) -> Result<()> {
    of(args).remove(name).map_err(|e| failure(&args.socket, &e))
}

/// One entry as a line: the name first, then what it is, who stored it
/// and when, and its lifetime.
fn line(entry: &Entry, now: u64) -> String {
    let mut line = format!("{}  {}", entry.name, entry.kind);
    if let Some(at) = entry.address.as_deref().or(entry.path.as_deref()) {
        line.push(' ');
        line.push_str(at);
    }
    let who = match (entry.stored_by_uid, entry.stored_by_pid) {
        (Some(uid), Some(pid)) => format!("uid {uid} pid {pid}"),
        (Some(uid), None) => format!("uid {uid}"),
        _ => "unknown".to_owned(),
    };
    line.push_str(&format!("  stored by {who}"));
    if let Some(at) = entry.stored_at {
        line.push_str(&format!(" at {}", utc(at)));
    }
    let mut lifetime = Vec::new();
    if let Some(at) = entry.expires_at {
        lifetime.push(format!(
            "until {} (in {})",
            utc(at),
            span(at.saturating_sub(now))
        ));
    }
    if let Some(pid) = entry.until_exit {
        lifetime.push(format!("until process {pid} exits"));
    }
    if lifetime.is_empty() {
        lifetime.push("for as long as the holder runs".to_owned());
    }
    line.push_str(&format!("  kept {}\n", lifetime.join(" or ")));
    line
}

fn json_entry(entry: &Entry) -> String {
    let text = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), json_string);
    format!(
        r#"  {{"name":{},"kind":{},"address":{},"path":{},"stored_by_uid":{},"stored_by_pid":{},"stored_at":{},"expires_at":{},"until_exit":{}}}"#,
        json_string(&entry.name),
        json_string(&entry.kind),
        text(&entry.address),
        text(&entry.path),
        json_or_null(entry.stored_by_uid),
        json_or_null(entry.stored_by_pid),
        json_or_null(entry.stored_at),
        json_or_null(entry.expires_at),
        json_or_null(entry.until_exit),
    )
}

/// `seconds` since the epoch as `2026-12-01T22:54:33Z`.
fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let time = seconds % 86_400;
    // The civil date of a day count (days since 1970-01-01), by eras of
    // 400 years, which repeat exactly.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// A span of seconds as `1h2m3s`, `4m`, `5s`.
fn span(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

/// The failure, and exit status, for an error of the holder client.
pub fn failure(socket: &SocketName, err: &io::Error) -> Failure {
    if let Some(refusal) = err.get_ref().and_then(|e| e.downcast_ref::<Refusal>()) {
        return Failure::new(
            fail::refusal_code(refusal.kind),
            format!("{socket}: {refusal}"),
        );
    }
    Failure::new(fail::code(err.kind(), Party::Holder), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_165_673), "2026-12-01T22:54:33Z");
        assert_eq!(span(0), "0s");
        assert_eq!(span(3723), "1h2m3s");
        assert_eq!(span(300), "5m");
    }

    #[test]
    fn lines_start_with_the_name() {
        let entry = Entry::parse(
            "web kind=tcp%20listener address=127.0.0.1:8080 uid=1000 pid=42 stored=100 expires=190",
        )
        .unwrap();
        let line = line(&entry, 100);
        assert!(line.starts_with("web "), "{line}");
        assert!(line.contains("tcp listener 127.0.0.1:8080"), "{line}");
        assert!(line.contains("uid 1000 pid 42"), "{line}");
        assert!(line.contains("in 1m30s"), "{line}");
    }
}
