//! `fdpass hold` and `fdpass fetch --take` at their limits: a take that
//! cannot be completed (a client with no room for the fds, a command that
//! cannot start, a client that goes away before it commits) leaves the
//! fds held; a holder at its open-file limit refuses a store as `full`,
//! and goes on answering `list` and `drop`; a holder whose fd table is
//! full turns each new client away as `full`, and serves again once
//! clients go. After each hostile case the holder's fd count is back
//! where it was, and it still answers `list`.
#![cfg(unix)]

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use util::{fails, fdpass, output, stderr, success, with_files, Holder, TempDir};

fn file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `fdpass ARGS` with at most `nofile` open fds (`prlimit`).
fn limited(nofile: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg(env!("CARGO_BIN_EXE_fdpass"))
        .args(args);
    cmd
}

/// Connects, and reads the greeting, with nothing but std's calls.
fn greeted(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut greeting = [0; 14];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"fdpass-hold 1\n");
    stream
}

/// Reads one line; the fds that come with it are closed unread (a plain
/// `read` takes no fds: the kernel closes them).
fn line(stream: &mut UnixStream) -> String {
    next_line(stream).unwrap()
}

/// The next line, or the error that ended the wait for it.
fn next_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0];
    while stream.read(&mut byte)? == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// After a hostile case: the holder holds `names`, and as many fds as
/// `fds`.
fn still_holds(holder: &Holder, names: &[&str], fds: usize) {
    holder.wait_for_fd_count(fds);
    assert_eq!(holder.list(), names);
}

#[test]
fn a_take_whose_command_cannot_start_leaves_the_fds_held() {
    let dir = TempDir::new("take");
    let holder = Holder::start(&dir, &[]);
    let data = file(&dir, "data", "held text");
    for name in ["a", "b"] {
        success(&mut with_files(
            &["store", holder.sock(), name, "3"],
            &[&data],
        ));
    }
    let fds = holder.fd_count();

    // A command that does not exist is found out before the take.
    fails(
        fdpass().args([
            "fetch",
            "--take",
            holder.sock(),
            "a",
            "--",
            "/no/such/command",
        ]),
        127,
        "command not found",
    );
    still_holds(&holder, &["a", "b"], fds);

    // A process with no room for the fds: at 4 and 5 it cannot receive
    // them (0-2 and the holder's socket take four).
    for nofile in [4, 5] {
        let args = ["fetch", "--take", holder.sock(), "a", "b", "--", "true"];
        let out = output(&mut limited(nofile, &args));
        assert!(!out.status.success(), "at {nofile}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("open-file limit"),
            "at {nofile}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        still_holds(&holder, &["a", "b"], fds);
    }

    // At 6 it can, and that is room enough to lay them out at 3 and 4
    // (the library's rule, activation::room_for, which the exec keeps):
    // the take happens, once. (Not through a shell's redirections, which
    // want fds of their own.) A check that wanted room to copy them above
    // 3 + 2 first would refuse it and leave them held.
    let shown = success(&mut limited(
        6,
        &[
            "fetch",
            "--take",
            holder.sock(),
            "a",
            "b",
            "--",
            "cat",
            "/dev/fd/3",
            "/dev/fd/4",
        ],
    ));
    assert_eq!(shown, "held textheld text");
    still_holds(&holder, &[], fds - 2);
}

#[test]
fn a_client_that_goes_away_before_it_commits_takes_nothing() {
    let dir = TempDir::new("take");
    let holder = Holder::start(&dir, &["--client-timeout", "1s"]);
    let data = file(&dir, "data", "held text");
    success(&mut with_files(
        &["store", holder.sock(), "a", "3"],
        &[&data],
    ));
    let fds = holder.fd_count();

    // Gone right after the answer.
    let mut client = greeted(&holder.socket);
    client.write_all(b"reserve a\n").unwrap();
    assert_eq!(line(&mut client), "ok\n");
    drop(client);
    still_holds(&holder, &["a"], fds);

    // Something else than commit.
    let mut client = greeted(&holder.socket);
    client.write_all(b"reserve a\n").unwrap();
    assert_eq!(line(&mut client), "ok\n");
    client.write_all(b"commitment\n").unwrap();
    assert_eq!(line(&mut client), "");
    still_holds(&holder, &["a"], fds);

    // Silent past the holder's deadline; meanwhile a second take is
    // refused, and a fetch is not.
    let mut silent = greeted(&holder.socket);
    silent.write_all(b"reserve a\n").unwrap();
    assert_eq!(line(&mut silent), "ok\n");
    fails(
        fdpass().args(["fetch", "--take", holder.sock(), "a", "--", "true"]),
        66,
        "another client is taking",
    );
    success(fdpass().args(["fetch", holder.sock(), "a", "--", "true"]));
    assert_eq!(
        line(&mut silent),
        "",
        "the holder cut the silent client off"
    );
    drop(silent);
    still_holds(&holder, &["a"], fds);

    // A commit removes the name, and is answered.
    let mut client = greeted(&holder.socket);
    client.write_all(b"reserve a\n").unwrap();
    assert_eq!(line(&mut client), "ok\n");
    client.write_all(b"commit\n").unwrap();
    assert_eq!(line(&mut client), "ok\n");
    drop(client);
    still_holds(&holder, &[], fds - 1);

    // The take of earlier clients is done once it is answered.
    success(&mut with_files(
        &["store", holder.sock(), "a", "3"],
        &[&data],
    ));
    let mut client = greeted(&holder.socket);
    client.write_all(b"take a\n").unwrap();
    assert_eq!(line(&mut client), "ok\n");
    assert_eq!(line(&mut client), "");
    drop(client);
    still_holds(&holder, &[], fds - 1);
}

/// `fdpass hold` at a socket in `dir` with at most `nofile` open fds, its
/// stderr in `log`.
fn limited_holder(dir: &TempDir, nofile: u32, extra: &[&str], log: &Path) -> Holder {
    let socket = dir.join("holder.sock");
    let child = limited(nofile, &["hold", "-v", s(&socket)])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let holder = Holder { child, socket };
    holder.wait_until_serving();
    holder
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn at_its_fd_limit_a_holder_refuses_stores_as_full_and_answers_the_rest() {
    let dir = TempDir::new("limits");
    let log = dir.join("log");
    // 100 fds: (100 - 64) / 2 = 18 names, and room for a copy of each.
    let holder = limited_holder(&dir, 100, &["--max-names", "500"], &log);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("warning: --max-names 500: holds at most 18 names")
            && said.contains("RLIMIT_NOFILE"),
        "{said}"
    );
    let data = file(&dir, "data", "held text");
    let store = |name: &str| {
        output(&mut with_files(
            &["store", holder.sock(), name, "3"],
            &[&data],
        ))
    };
    let mut stored = Vec::new();
    let refused = loop {
        let name = format!("n{:02}", stored.len());
        let out = store(&name);
        if !out.status.success() {
            break out;
        }
        stored.push(name);
        assert!(stored.len() <= 100, "no store was refused");
    };
    assert_eq!(refused.status.code(), Some(77), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("refused"), "{}", stderr(&refused));
    assert_eq!(stored.len(), 18);
    let fds = holder.fd_count();

    // It answers list, a fetch of everything, and drop; then a store fits.
    assert_eq!(holder.list(), stored);
    let names: Vec<&str> = stored.iter().map(String::as_str).collect();
    let mut fetch = vec!["fetch", holder.sock()];
    fetch.extend(&names);
    fetch.extend(["--", "sh", "-c", "test $LISTEN_FDS = 18"]);
    success(fdpass().args(&fetch));
    still_holds(&holder, &names, fds);
    success(fdpass().args(["drop", holder.sock(), "n00"]));
    still_holds(&holder, &names[1..], fds - 1);
    assert!(store("again").status.success());
    holder.wait_for_fd_count(fds);
    assert_eq!(holder.list().len(), 18);
}

#[test]
fn at_a_full_fd_table_a_holder_turns_clients_away_as_full_and_recovers() {
    let dir = TempDir::new("emfile");
    let log = dir.join("log");
    // 24 fds: the holder's own (0-2, its runtime, socket, state file and
    // spare) take about half, and it serves at least 16 connections at
    // once, more than the rest has room for: silent clients fill its fd
    // table before any is dropped to make room, and the next `accept`
    // fails with EMFILE.
    let holder = limited_holder(&dir, 24, &["--client-timeout", "300s"], &log);
    let data = file(&dir, "data", "held text");
    success(&mut with_files(
        &["store", holder.sock(), "a", "3"],
        &[&data],
    ));
    let fds = holder.fd_count();

    // Greeted and silent, until one is turned away.
    let mut silent = Vec::new();
    let turned_away = loop {
        assert!(
            silent.len() < 24,
            "{} clients were greeted, and none turned away: {:?}",
            silent.len(),
            holder.open_fds()
        );
        let mut client = UnixStream::connect(&holder.socket).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let first = next_line(&mut client).unwrap_or_else(|err| {
            panic!(
                "client {} was neither greeted nor turned away: {err}",
                silent.len() + 1
            )
        });
        if first != "fdpass-hold 1\n" {
            break (first, client);
        }
        silent.push(client);
    };
    let (refusal, mut client) = turned_away;
    assert_eq!(
        refusal,
        "error full the holder is at its open-file limit (RLIMIT_NOFILE): try again when fewer clients are connected\n"
    );
    assert_eq!(line(&mut client), "", "the holder closed it");
    drop(client);

    // Each command is told so, as a refusal (77), not as a holder that
    // broke the protocol (76) or did not answer (75); a store's fd is not
    // kept.
    let full = "the holder refused: the holder is at its open-file limit";
    fails(fdpass().args(["list", holder.sock()]), 77, full);
    fails(fdpass().args(["drop", holder.sock(), "a"]), 77, full);
    fails(
        &mut with_files(&["store", holder.sock(), "b", "3"], &[&data]),
        77,
        full,
    );
    fails(
        fdpass().args(["fetch", holder.sock(), "a", "--", "true"]),
        77,
        full,
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("hold: turned away a client: at the open-file limit"),
        "{said}"
    );

    // The clients it took are served as before.
    let mut first = silent.remove(0);
    first.write_all(b"list\n").unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("ok\na "), "{answer:?}");
    drop(first);

    // Once they are gone, its fds are as they were, and it answers.
    drop(silent);
    still_holds(&holder, &["a"], fds);
    success(fdpass().args(["drop", holder.sock(), "a"]));
    still_holds(&holder, &[], fds - 1);
}

#[test]
fn names_kept_until_a_process_exits_leave_the_fds_in_reserve() {
    let dir = TempDir::new("until-exit");
    let log = dir.join("log");
    // 200 fds: (200 - 64) / 2 = 68 names, a copy of each, and 68
    // connections. A watch of each name's process must not take an fd of
    // that room: with a pidfd for each, a fetch of all of them, or a
    // client past the 51st, found the fd table full.
    let holder = limited_holder(&dir, 200, &["--client-timeout", "300s"], &log);
    let data = file(&dir, "data", "held text");
    let this = std::process::id().to_string();
    let names: Vec<String> = (0..68).map(|i| format!("n{i:02}")).collect();
    for name in &names {
        success(&mut with_files(
            &["store", "--until-exit", &this, holder.sock(), name, "3"],
            &[&data],
        ));
    }
    let fds = holder.fd_count();

    let mut fetch = vec!["fetch", holder.sock()];
    fetch.extend(names.iter().map(String::as_str));
    fetch.extend(["--", "sh", "-c", "test $LISTEN_FDS = 68"]);
    success(fdpass().args(&fetch));
    still_holds(&holder, &fetch[2..70], fds);

    // As many clients as it serves at once, silent; then list and drop
    // are answered (each in place of the oldest). The last name stored
    // is watched without a pidfd: its drop closes one fd.
    let silent: Vec<UnixStream> = (0..68).map(|_| greeted(&holder.socket)).collect();
    assert_eq!(holder.list(), names);
    success(fdpass().args(["drop", holder.sock(), "n67"]));
    drop(silent);
    still_holds(&holder, &fetch[2..69], fds - 1);
}
