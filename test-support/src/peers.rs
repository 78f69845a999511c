//! The peers written elsewhere that the tests talk to: Perl's `IO::FDPass` and
//! Python's `socket` module. Shared by the library's tests and fdpass's.

use std::process::Command;

/// `program`, after checking that `check` runs, naming the package to
/// install otherwise.
#[must_use]
pub fn require(program: &str, check: &[&str], package: &str) -> Command {
    let ok = Command::new(program)
        .args(check)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{program} {}` failed: install {package} (the README's test command does)",
        check.join(" ")
    );
    Command::new(program)
}

/// `perl` with `IO::FDPass` and `IO::Socket::UNIX` loaded.
#[must_use]
pub fn perl() -> Command {
    let mut cmd = require("perl", &["-MIO::FDPass", "-e1"], "libio-fdpass-perl");
    cmd.arg("-MIO::FDPass").arg("-MIO::Socket::UNIX");
    cmd
}

/// `python3`, with `socket.send_fds` and `recv_fds` (3.9 or later).
#[must_use]
pub fn python() -> Command {
    require(
        "python3",
        &["-c", "import socket; socket.send_fds, socket.recv_fds"],
        "python3 (3.9 or later)",
    )
}
