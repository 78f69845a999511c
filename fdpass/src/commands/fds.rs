//! `fdpass fds`: what another process's fds are.

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
/// `socket`, `character device`, `block device`, `other`: the library's
/// `FdKind::word`), `description` (the line's text), and for a file,
/// directory or device `path`, for a socket `family`, `type`, `listening`
/// and `local`, for anything else `name`. Paths that are not UTF-8 are
/// shown lossily.
fn json_object(fd: &ProcessFd) -> String {
    let text = |s: &str| crate::output::json_string(s);
    let or_null = |s: Option<&str>| s.map_or("null".into(), text);
    let kind = text(fd.kind.word());
    let fields = match &fd.kind {
        FdKind::Pipe => format!(r#""kind":{kind}"#),
        FdKind::Socket(s) => format!(
            r#""kind":{kind},"family":{},"type":{},"listening":{},"local":{}"#,
            text(&s.family.to_string().to_lowercase()),
            text(&s.socket_type.to_string()),
            s.listening,
            or_null(s.local.as_ref().map(ToString::to_string).as_deref())
        ),
        FdKind::Other(name) => format!(r#""kind":{kind},"name":{}"#, or_null(name.as_deref())),
        other => format!(
            r#""kind":{kind},"path":{}"#,
            or_null(other.path().map(|p| p.to_string_lossy()).as_deref())
        ),
    };
    format!(
        r#"{{"fd":{},{fields},"description":{}}}"#,
        fd.fd,
        text(&fd.kind.to_string())
    )
}
