//! `fdpass list`: what the holder holds, as lines or JSON.

use std::time::Duration;

use io_fdpass::holder::protocol::Entry;

use crate::cli::ListArgs;
use crate::client;
use crate::fail::Result;
use crate::output::{self, escape, json_or_null, json_string};

/// `fdpass list`: the entries, as lines or JSON.
pub fn run(args: &ListArgs) -> Result<()> {
    let holder = &args.holder;
    let entries = super::holder_client(holder)
        .entries()
        .map_err(|e| client::failure(&holder.socket, &e))?;
    let now = io_fdpass::holder::unix_now();
    let text = if args.json {
        let objects: Vec<String> = entries.iter().map(json_entry).collect();
        if objects.is_empty() {
            "[]\n".to_owned()
        } else {
            format!("[\n{}\n]\n", objects.join(",\n"))
        }
    } else {
        entries.iter().map(|e| line(e, now)).collect()
    };
    output::print(&text)
}

/// One entry as a line: the name first, then what it is, who stored it
/// and when, and its lifetime. What the holder says is escaped: a path
/// can hold a newline or an escape sequence.
fn line(entry: &Entry, now: Duration) -> String {
    let mut line = format!("{}  {}", escape(&entry.name), escape(&entry.kind));
    if let Some(at) = entry.address.as_deref().or(entry.path.as_deref()) {
        line.push(' ');
        line.push_str(&escape(at));
    }
    let who = match (entry.stored_by_uid, entry.stored_by_pid) {
        (Some(uid), Some(pid)) => format!("uid {uid} pid {pid}"),
        (Some(uid), None) => format!("uid {uid}"),
        (None, Some(pid)) => format!("pid {pid}"),
        _ => "unknown".to_owned(),
    };
    line.push_str(&format!("  stored by {who}"));
    if let Some(at) = entry.stored_at {
        line.push_str(&format!(" at {}", utc(at)));
    }
    let mut lifetime = Vec::new();
    if let (Some(at), Some(left)) = (entry.expires_at, entry.expires_in(now)) {
        lifetime.push(format!("until {} (in {})", utc(at), span(left.as_secs())));
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
        // A --ttl 90s stored at 100.3 s, which the holder rounds up to 191.
        let entry = Entry::parse(
            "web kind=tcp%20listener address=127.0.0.1:8080 uid=1000 pid=42 stored=100 expires=191",
        )
        .unwrap();
        let line = line(&entry, Duration::from_millis(100_400));
        assert!(line.starts_with("web "), "{line}");
        assert!(line.contains("tcp listener 127.0.0.1:8080"), "{line}");
        assert!(line.contains("uid 1000 pid 42"), "{line}");
        assert!(line.contains("in 1m30s"), "{line}");
    }

    #[test]
    fn paths_are_escaped_onto_one_line() {
        let entry = Entry::parse("f kind=file path=/tmp/x%0A%1B[31my uid=0").unwrap();
        let line = line(&entry, Duration::ZERO);
        assert!(
            line.starts_with("f  file /tmp/x\\n\\e[31my  stored"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}
