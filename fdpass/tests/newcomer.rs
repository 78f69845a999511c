//! What someone new to fdpass meets first: messages for a wrong path, a
//! zero or endless duration, the help of `help`, and a help text in which
//! every argument says what it is.
#![cfg(unix)]

mod util;

use util::{fails, fdpass, success, TempDir};

#[test]
fn a_file_or_a_directory_is_not_a_socket() {
    let dir = TempDir::new("not-a-socket");
    let file = dir.join("README.md");
    std::fs::write(&file, "not a socket").unwrap();
    for (path, what) in [
        (file.to_str().unwrap(), "is a regular file, not a socket"),
        ("/tmp", "/tmp is a directory, not a socket"),
    ] {
        for command in [&["list", path][..], &["drop", path, "web"]] {
            fails(fdpass().args(command), 64, what);
            let out = util::output(fdpass().args(command));
            let err = util::stderr(&out);
            assert!(!err.contains("refused"), "{err}");
            assert!(!err.contains("is the holder running"), "{err}");
        }
    }
}

#[test]
fn a_zero_ttl_or_timeout_is_a_usage_error() {
    for args in [
        &["store", "/tmp/h.sock", "web", "0", "--ttl", "0"][..],
        &["store", "/tmp/h.sock", "web", "0", "--ttl", "0ms"],
    ] {
        fails(fdpass().args(args), 64, "longer than zero");
    }
    for args in [
        &["list", "/tmp/h.sock", "--timeout", "0"][..],
        &["send", "/tmp/r.sock", "0", "--timeout", "0s"],
        &["recv", "/tmp/r.sock", "--timeout", "0", "--", "true"],
        &["hold", "/tmp/h.sock", "--client-timeout", "0"],
    ] {
        fails(fdpass().args(args), 64, "longer than zero");
    }
}

#[test]
fn a_ttl_longer_than_a_holder_keeps_is_a_usage_error() {
    for ttl in ["18446744073709551", "3155760001s", "876001h"] {
        fails(
            fdpass().args(["store", "/tmp/h.sock", "web", "0", "--ttl", ttl]),
            64,
            "longer than a holder keeps an fd",
        );
    }
}

#[test]
fn help_has_help_and_prints_every_help() {
    let own = success(fdpass().args(["help", "--help"]));
    assert!(own.contains("Print the help of fdpass"), "{own}");
    assert_eq!(
        success(fdpass().args(["help", "store"])),
        success(fdpass().args(["store", "--help"]))
    );
    assert_eq!(
        success(fdpass().arg("help")),
        success(fdpass().arg("--help"))
    );
    fails(
        fdpass().args(["help", "no-such-command"]),
        64,
        "no-such-command",
    );
}

/// The lines of `help` that name an argument, e.g. `  <SOCKET>`, and
/// what follows on the line.
fn positionals(help: &str) -> Vec<(String, String)> {
    help.lines()
        .filter_map(|line| {
            let line = line.strip_prefix("  ")?;
            let rest = line.strip_prefix('<')?;
            let (name, after) = rest.split_once('>')?;
            let after = after.trim_start_matches("...");
            Some((name.to_owned(), after.trim().to_owned()))
        })
        .collect()
}

#[test]
fn every_argument_says_what_it_is() {
    for command in [
        "send",
        "recv",
        "listen",
        "adopt",
        "fds",
        "hold",
        "store",
        "fetch",
        "list",
        "drop",
        "completions",
        "man",
        "help",
    ] {
        let help = success(fdpass().args([command, "-h"]));
        for (name, description) in positionals(&help) {
            assert!(
                !description.is_empty(),
                "fdpass {command} --help: <{name}> has no description:\n{help}"
            );
        }
    }
}

#[test]
fn the_upgrade_example_signals_one_holder() {
    let help = success(fdpass().args(["hold", "--help"]));
    assert!(!help.contains("pidof"), "{help}");
    assert!(help.contains("kill -HUP"), "{help}");
}

#[test]
fn a_name_with_a_space_is_refused_without_speaking_of_a_holder() {
    for args in [
        &["listen", "tcp:127.0.0.1:0", "--name", "a b", "--", "true"][..],
        &["recv", "/tmp/r.sock", "--name", "a b", "--", "true"],
    ] {
        let out = util::output(fdpass().args(args));
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains("a name is one word"), "{err}");
        assert!(!err.contains("holder") && !err.contains("held"), "{err}");
    }
}

#[test]
fn verbose_is_offered_only_where_it_logs() {
    let logs = ["send", "recv", "listen", "adopt", "hold", "store", "drop"];
    let quiet = ["fds", "fetch", "list", "completions", "man", "help"];
    for command in logs.iter().chain(&quiet) {
        let help = success(fdpass().args([command, "--help"]));
        assert_eq!(
            help.contains("-v, --verbose"),
            logs.contains(command),
            "fdpass {command} --help:\n{help}"
        );
    }
    assert!(!success(fdpass().arg("--help")).contains("--verbose"));
    fails(fdpass().args(["man", "-v"]), 64, "'-v'");
    fails(
        fdpass().args(["completions", "bash", "--verbose"]),
        64,
        "'--verbose'",
    );
    // Before the subcommand, as earlier versions took it (and a holder
    // started so runs itself again on upgrade), -v is still understood.
    fails(
        fdpass().args(["-v", "drop", "/nonexistent/h.sock", "web"]),
        69,
        "/nonexistent/h.sock",
    );
}

#[test]
fn dev_null_is_a_character_device() {
    let mut child = std::process::Command::new("sleep")
        .arg("600")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let lines = util::output(fdpass().args(["fds", &pid]));
    let json = util::output(fdpass().args(["fds", "--json", &pid]));
    util::terminate(&mut child);
    let lines = util::stdout(&lines);
    assert!(
        lines
            .lines()
            .any(|l| l == "0 the character device /dev/null"),
        "{lines}"
    );
    let json = util::stdout(&json);
    let null = r#"{"fd":0,"kind":"character device","path":"/dev/null","description":"the character device /dev/null"}"#;
    assert!(json.contains(null), "{json}");
}
