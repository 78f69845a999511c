//! What a shell user expects of `fdpass`: completions and manual pages, a
//! hint for a command not set off with `--`, a plain word on a socket path
//! too long for the kernel, and exit status 74, never a panic, when stdout
//! or stderr is closed or full.
#![cfg(unix)]

mod util;

use std::process::{Command, Output, Stdio};

use util::{fails, fdpass, output, s, stderr, stdout, success, with_files, Holder, TempDir};

/// `fdpass ARGS` run by sh with `redirect` applied (`>&-`, `2>/dev/full`),
/// its stdout and stderr captured where the redirection leaves them.
fn redirected(redirect: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec \"$0\" \"$@\" {redirect}"))
        .arg(env!("CARGO_BIN_EXE_fdpass"))
        .args(args);
    output(&mut cmd)
}

/// Asserts that `fdpass ARGS` with `redirect` exits 74 without a panic,
/// saying why on stderr where stderr is still there.
fn exits_74(redirect: &str, args: &[&str]) {
    let out = redirected(redirect, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(74), "{args:?} {redirect}: {err}");
    assert!(!err.contains("panicked"), "{args:?} {redirect}: {err}");
    if !redirect.starts_with('2') {
        assert!(err.contains("cannot write to stdout"), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_or_full_stdout_or_stderr_exits_74() {
    let dir = TempDir::new("closed");
    let holder = Holder::start(&dir, &[]);
    let data = dir.join("data");
    std::fs::write(&data, "x").unwrap();
    success(&mut with_files(
        &["store", holder.sock(), "kept", "3"],
        &[&data],
    ));
    let pid = std::process::id().to_string();
    for redirect in [">/dev/full", ">&-"] {
        for args in [
            &["list", holder.sock()][..],
            &["list", "--json", holder.sock()],
            &["fds", &pid],
            &["--help"],
            &["list", "--help"],
            &["--version"],
            &["completions", "bash"],
            &["man"],
        ] {
            exits_74(redirect, args);
        }
    }
    // A failure that cannot be told: stderr closed or full.
    let nothing = dir.join("nothing.sock");
    for redirect in ["2>/dev/full", "2>&-"] {
        for args in [
            &["list", s(&nothing)][..],
            &["frobnicate"],
            &["store", holder.sock(), "bad:name", "0"],
            &["listen", "tcp:127.0.0.1:0", "true"],
        ] {
            exits_74(redirect, args);
        }
    }
    // What the holder holds was not disturbed.
    assert_eq!(holder.list(), ["kept"]);
}

#[test]
fn a_command_run_finds_closed_what_the_shell_closed() {
    let dir = TempDir::new("closed-exec");
    let sock = dir.join("l.sock");
    let unix = format!("unix:{}", s(&sock));
    let probe = |fd: u32| {
        format!("if (exec 9>&{fd}) 2>/dev/null; then echo open >&2; else echo closed >&2; fi")
    };
    // Closed stays closed; and of the fds above 2, the command gets only
    // the ones laid out for it, not one the shell left open.
    for (redirect, fd, seen) in [
        (">&-", 1, "closed\n"),
        ("", 1, "open\n"),
        ("7</dev/null", 7, "closed\n"),
        ("7</dev/null", 3, "open\n"),
    ] {
        let out = redirected(redirect, &["listen", &unix, "--", "sh", "-c", &probe(fd)]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), seen, "{redirect}, fd {fd}");
    }
    // An fd the shell closed is not open to send.
    let out = redirected(">&-", &["send", s(&sock), "1"]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fd 1 is not open"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_separator_gets_a_hint() {
    let dir = TempDir::new("separator");
    let sock = dir.join("s");
    let holder = dir.join("holder.sock");
    for (args, hint) in [
        (
            vec!["listen", "tcp:127.0.0.1:8080", "python3", "server.py"],
            "fdpass listen tcp:127.0.0.1:8080 -- python3 server.py".to_owned(),
        ),
        (
            vec!["recv", s(&sock), "sh", "-c", "cat <&3"],
            format!("fdpass recv {} -- sh -c 'cat <&3'", s(&sock)),
        ),
        (
            vec!["fetch", s(&holder), "web", "./server"],
            format!("fdpass fetch {} web -- ./server", s(&holder)),
        ),
        (
            vec!["adopt", "1", "3", "./server", "--flag"],
            "fdpass adopt 1 3 -- ./server --flag".to_owned(),
        ),
    ] {
        fails(
            fdpass().args(&args),
            64,
            &format!("fdpass: put `--` before the command to run: {hint}\n"),
        );
        // Besides clap's own error.
        let out = output(fdpass().args(&args));
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
    // Where `--` is there, or no `--` would mend the line, no hint.
    for args in [
        &["listen", "tcp:nohost", "--", "true"][..],
        &["listen", "tcp:nohost", "true"],
        &["list", "a", "b"],
    ] {
        let out = output(fdpass().args(args));
        assert_eq!(out.status.code(), Some(64));
        assert!(!stderr(&out).contains("put `--`"), "{}", stderr(&out));
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn a_socket_path_too_long_is_explained() {
    let dir = TempDir::new("long");
    let limit = if cfg!(any(target_os = "linux", target_os = "android")) {
        107
    } else {
        103
    };
    let long = format!("{}/{}", s(&dir.join("")), "x".repeat(limit));
    let unix = format!("unix:{long}");
    let abstract_name = format!("@{}", "x".repeat(limit + 1));
    let says = format!("can have at most {limit}");
    // Every command that binds or connects.
    for args in [
        &["send", &long, "0"][..],
        &["recv", &long, "--", "true"],
        &["listen", &unix, "--", "true"],
        &["adopt", "1", "0", "--store", &long],
        &["hold", &long],
        &["hold", "@short", "--from", &long],
        &["store", &long, "a", "0"],
        &["fetch", &long, "a", "--", "true"],
        &["list", &long],
        &["drop", &long, "a"],
    ] {
        fails(fdpass().args(args), 64, &says);
        fails(fdpass().args(args), 64, "use a shorter path");
    }
    if cfg!(any(target_os = "linux", target_os = "android")) {
        fails(fdpass().args(["list", &long]), 64, "or an @name");
        fails(fdpass().args(["list", &abstract_name]), 64, &says);
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());

    // The longest path allowed is one the kernel takes, here a relative
    // one from the socket's directory.
    let longest = "y".repeat(limit);
    let mut hold = fdpass()
        .args(["hold", &longest])
        .current_dir(dir.join(""))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let list = || output(fdpass().args(["list", &longest]).current_dir(dir.join("")));
    util::wait_until(
        || list().status.success(),
        || {
            format!(
                "the holder at a {limit}-byte path never answered: {}",
                stderr(&list())
            )
        },
    );
    assert_eq!(stdout(&list()), "");
    assert!(util::terminate(&mut hold).success());
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = success(fdpass().args(["completions", shell]));
        for word in ["hold", "fetch", "client-timeout", "completions"] {
            assert!(script.contains(word), "{shell}: no {word} in {script}");
        }
    }
    // Bash takes its script, and completes a subcommand from it.
    let bash = "source <(\"$0\" completions bash) && COMP_WORDS=(fdpass ho) COMP_CWORD=1 && _fdpass fdpass ho fdpass && echo \"${COMPREPLY[@]}\"";
    let out = output(
        Command::new("bash")
            .args(["-c", bash])
            .arg(env!("CARGO_BIN_EXE_fdpass")),
    );
    assert_eq!(stdout(&out).trim(), "hold", "{}", stderr(&out));
    fails(fdpass().args(["completions", "tcsh"]), 64, "tcsh");
}

#[test]
fn manual_pages() {
    let page = success(fdpass().arg("man"));
    assert!(page.contains(".TH fdpass 1"), "{page}");
    for section in ["SYNOPSIS", "SUBCOMMANDS", "EXIT STATUS"] {
        assert!(
            page.contains(&format!(".SH {section}"))
                || page.contains(&format!(".SH \"{section}\"")),
            "{section}: {page}"
        );
    }
    assert!(page.contains("fdpass\\-hold(1)"), "{page}");

    let dir = TempDir::new("man");
    success(fdpass().args(["man", "--dir", s(&dir.join(""))]));
    let mut pages = dir.entries();
    pages.sort();
    let mut expected: Vec<String> = [
        "adopt",
        "completions",
        "drop",
        "fds",
        "fetch",
        "hold",
        "list",
        "listen",
        "man",
        "recv",
        "send",
        "store",
    ]
    .iter()
    .map(|sub| format!("fdpass-{sub}.1"))
    .chain(["fdpass.1".to_owned()])
    .collect();
    expected.sort();
    assert_eq!(pages, expected);
    let hold = std::fs::read_to_string(dir.join("fdpass-hold.1")).unwrap();
    for text in [
        "\\-\\-client\\-timeout",
        "EXAMPLES",
        "fdpass hold /run/fds.sock &",
        "SEE ALSO",
    ] {
        assert!(hold.contains(text), "{text}: {hold}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("fdpass.1")).unwrap(),
        page,
        "the page on stdout is the one written"
    );

    // groff reads every page without a warning, where it is installed.
    if Command::new("groff").arg("-v").output().is_err() {
        eprintln!("groff is not installed: the pages are not rendered");
        return;
    }
    for name in &pages {
        let out = output(
            Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(dir.join(name)),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            stderr(&out)
        );
    }
    let shown = output(
        Command::new("groff")
            .args(["-k", "-man", "-Tutf8"])
            .arg(dir.join("fdpass.1")),
    );
    let shown = stdout(&shown);
    assert!(shown.contains("usage error"), "{shown}");
}
