//! `fdpass fds`: what another process's fds are.

use std::path::PathBuf;

use io_fdpass::process::{Process, ProcessFd};
use io_fdpass::FdKind;

use crate::cli::FdsArgs;
use crate::fail::{Failure, Result};

/// `fdpass fds PID`: one line per fd, or a JSON array with one object per
/// line.
pub fn run(args: &FdsArgs) -> Result<()> {
    let (pid, json) = (args.pid, args.json);
    let fds = Process::open(pid)
        .and_then(|process| process.fds())
        .map_err(Failure::process)?;
    let mut out = String::new();
    if json {
        out.push_str("[\n");
        for (i, fd) in fds.iter().enumerate() {
            let comma = if i + 1 < fds.len() { "," } else { "" };
            out.push_str(&format!("{}{comma}\n", json_object(fd)));
        }
        out.push_str("]\n");
    } else {
        for fd in &fds {
            // Escaped: a path or a socket's address can hold a newline or
            // an escape sequence.
            let kind = crate::output::escape(&fd.kind.to_string());
            out.push_str(&format!("{} {kind}\n", fd.fd));
        }
    }
    crate::output::print(&out)
}

/// One fd as a JSON object: `fd`, `kind` (`file`, `directory`, `pipe`,
/// `socket`, `other`), `description` (the line's text), and for a file or
/// directory `path`, for a socket `family`, `type`, `listening` and
/// `local`, for anything else `name`. Paths that are not UTF-8 are shown
/// lossily.
fn json_object(fd: &ProcessFd) -> String {
    let text = |s: &str| crate::output::json_string(s);
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("null".into(), |p| text(&p.to_string_lossy()))
    };
    let fields = match &fd.kind {
        FdKind::File(p) => format!(r#""kind":"file","path":{}"#, path(p)),
        FdKind::Directory(p) => format!(r#""kind":"directory","path":{}"#, path(p)),
        FdKind::Pipe => r#""kind":"pipe""#.into(),
        FdKind::Socket(s) => format!(
            r#""kind":"socket","family":{},"type":{},"listening":{},"local":{}"#,
            text(&s.family.to_string().to_lowercase()),
            text(&s.socket_type.to_string()),
            s.listening,
            s.local
                .as_ref()
                .map_or("null".into(), |local| text(&local.to_string()))
        ),
        FdKind::Other(name) => format!(
            r#""kind":"other","name":{}"#,
            name.as_deref().map_or("null".into(), text)
        ),
        _ => r#""kind":"other","name":null"#.into(),
    };
    format!(
        r#"{{"fd":{},{fields},"description":{}}}"#,
        fd.fd,
        text(&fd.kind.to_string())
    )
}
