//! A Rust server that adopts its sockets with `io_fdpass::activation`,
//! started by `fdpass listen` and by `fdpass fetch` from a holder: this
//! test binary, run again as the command, is that server.
#![cfg(unix)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use io_fdpass::activation::ListenFds;
use util::{fdpass, s, success, Holder, TempDir};

/// Set in the child: the port its TCP listener must be on.
const CHILD: &str = "FDPASS_TEST_ACTIVATION_CHILD";

/// The server, when this binary runs as the command: it takes `web` (TCP)
/// and `local` (unix) by name, checks what the library says of them, says
/// it is ready, and answers one connection on each.
#[test]
fn the_adopting_server() {
    let Ok(port) = std::env::var(CHILD) else {
        return;
    };
    let mut fds = ListenFds::take().unwrap();
    assert!(
        std::env::var_os("LISTEN_FDS").is_some(),
        "the environment is left as it was"
    );
    assert_eq!(fds.len(), 2);
    let web = fds.index_of("web").unwrap();
    let local = fds.index_of("local").unwrap();
    // The wrong kind is refused, and the fd stays to be taken as what it is.
    let wrong = fds.take_unix_listener(web).unwrap_err();
    assert_eq!(wrong.kind(), std::io::ErrorKind::InvalidInput, "{wrong}");
    assert!(wrong.to_string().contains("TCP"), "{wrong}");
    let tcp = fds.take_tcp_listener(web).unwrap();
    assert_eq!(tcp.local_addr().unwrap().port().to_string(), port);
    let unix = fds.take_unix_listener(local).unwrap();
    assert_eq!(fds.take_fd(web).map(drop), None, "an fd taken twice");
    println!("ready");
    tcp.accept().unwrap().0.write_all(b"web").unwrap();
    unix.accept().unwrap().0.write_all(b"local").unwrap();
}

/// Runs `command ARGS -- this-binary the_adopting_server` and talks to
/// the server it becomes.
fn serve_through(starter: &mut Command, port: u16, unix: &std::path::Path) {
    let mut child = starter
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_adopting_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.is_ok_and(|l| l.contains("ready"))),
        "the server never said it was ready"
    );
    let mut answer = String::new();
    TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    assert_eq!(answer, "web");
    answer.clear();
    UnixStream::connect(unix)
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    assert_eq!(answer, "local");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "the server failed: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("1 passed")), "{rest:?}");
}

#[test]
fn a_rust_server_adopts_what_fdpass_listen_opens() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = TempDir::new("activation-listen");
    let port = util::free_port();
    let unix = dir.join("local.sock");
    serve_through(
        fdpass().args([
            "listen",
            &format!("tcp:127.0.0.1:{port}"),
            &format!("unix:{}", s(&unix)),
            "--name",
            "web",
            "--name",
            "local",
        ]),
        port,
        &unix,
    );
}

#[test]
fn a_rust_server_adopts_what_fdpass_fetch_brings() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = TempDir::new("activation-fetch");
    let holder = Holder::start(&dir, &[]);
    let port = util::free_port();
    let unix = dir.join("local.sock");
    success(
        fdpass()
            .args([
                "listen",
                &format!("tcp:127.0.0.1:{port}"),
                &format!("unix:{}", s(&unix)),
                "--",
                "sh",
                "-c",
                &format!(
                    "fdpass store {sock} web 3 && fdpass store {sock} local 4",
                    sock = holder.sock()
                ),
            ])
            .env("PATH", path_with_fdpass()),
    );
    serve_through(
        fdpass().args(["fetch", holder.sock(), "local", "web"]),
        port,
        &unix,
    );
    // The holder still has both, for the next generation.
    assert_eq!(holder.list(), ["local", "web"]);
}

/// `PATH` with the fdpass under test first.
fn path_with_fdpass() -> String {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fdpass"))
        .parent()
        .unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
