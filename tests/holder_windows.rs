//! The holder on Windows at an `AF_UNIX` path: where Windows has no
//! `AF_UNIX` (Wine 8, Windows before 10 1803), a path is refused with
//! `Unsupported` and leaves nothing open or behind; where it has, a
//! holder in this process serves its user there, a stale socket file is
//! replaced, and a live socket or anything else at the path is refused.
//! The tests of one case report themselves skipped where the other holds.

#![cfg(windows)]

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use io_fdpass::holder::{address, Address, Client, Listener, Server};
use io_fdpass_test_support::{
    skip_with_af_unix, skip_without_af_unix, stale_socket_file, temp_path, NoLeak, OpensFds,
    TempDir,
};

/// The text of `path`, as a holder's address.
fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Whether anything is at `path`, a socket file included (`exists`
/// follows the reparse point a socket file is).
fn anything_at(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Asserts `err` is the refusal of a path where Windows has no `AF_UNIX`.
#[track_caller]
fn assert_no_af_unix(err: &std::io::Error, path: &Path) {
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let message = err.to_string();
    for says in [
        text(path),
        "no AF_UNIX sockets",
        "Windows 10 1803",
        "tcp:127.0.0.1:PORT",
    ] {
        assert!(message.contains(says), "{says:?} not in {message:?}");
    }
}

/// For a test that needs `AF_UNIX`: a fresh directory, a socket's path
/// in it and its address; `None`, said on stderr, where Windows has no
/// `AF_UNIX`.
fn a_socket_path(test: &str) -> Option<(TempDir, PathBuf, Address)> {
    if skip_without_af_unix(test) {
        return None;
    }
    let dir = TempDir::new("holder");
    let path = dir.join("h.sock");
    let addr = address(text(&path)).unwrap();
    Some((dir, path, addr))
}

#[test]
fn a_path_without_af_unix_is_unsupported_and_leaves_nothing_open() {
    if skip_with_af_unix("a_path_without_af_unix_is_unsupported_and_leaves_nothing_open") {
        return;
    }
    let path = temp_path("holder.sock");
    let addr = address(text(&path)).unwrap();
    // Winsock starts once per process, and makes its first socket, with
    // handles of its own that stay: before the count.
    let _ = Listener::bind(&addr);
    drop(TcpListener::bind("127.0.0.1:0").unwrap());
    let check = NoLeak::start();
    let err = Listener::bind(&addr).unwrap_err();
    assert_no_af_unix(&err, &path);
    assert!(err.to_string().starts_with("cannot listen at "), "{err}");
    let client = Client::new(&path).timeout(Duration::from_secs(30));
    assert_no_af_unix(&client.list().unwrap_err(), &path);
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_no_af_unix(&client.store("web", &socket).unwrap_err(), &path);
    drop(socket);
    assert_no_af_unix(&client.fetch("web").unwrap_err(), &path);
    check.assert_unchanged();
    assert!(!anything_at(&path), "something was left at {path:?}");
}

#[test]
fn a_path_too_long_for_sun_path_is_invalid_input() {
    let _fds = OpensFds::start();
    let long = format!("C:\\{}", "d".repeat(105));
    assert_eq!(long.len(), 108);
    let err = address(&long).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at most 107"), "{err}");
    let err = Client::new(&long).list().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(address(&long[..107]).is_ok());
}

#[test]
fn a_holder_at_a_path_serves_its_user() {
    let _fds = OpensFds::start();
    let Some((_dir, path, addr)) = a_socket_path("a_holder_at_a_path_serves_its_user") else {
        return;
    };
    let listener = Listener::bind(&addr).unwrap();
    assert_eq!(listener.local_address().unwrap(), addr);
    // A second holder at the path is refused while the first listens.
    let err = Listener::bind(&addr).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert!(
        err.to_string().contains("another process is listening"),
        "{err}"
    );
    // The server runs until this test binary exits.
    std::thread::spawn(move || Server::new(listener).run());
    let client = Client::new(&path).timeout(Duration::from_secs(30));
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    client.store("web", &socket).unwrap();
    assert_eq!(client.list().unwrap(), ["web"]);
    let fetched = TcpListener::from(client.fetch("web").unwrap());
    assert_eq!(fetched.local_addr().unwrap(), socket.local_addr().unwrap());
    let taken = TcpListener::from(client.take("web").unwrap());
    assert_eq!(taken.local_addr().unwrap(), socket.local_addr().unwrap());
    assert_eq!(client.list().unwrap(), Vec::<String>::new());
    let err = client.drop("web").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn a_stale_socket_file_is_replaced_and_anything_else_refused() {
    let _fds = OpensFds::start();
    let Some((_dir, path, addr)) =
        a_socket_path("a_stale_socket_file_is_replaced_and_anything_else_refused")
    else {
        return;
    };
    stale_socket_file(&path);
    let listener = Listener::bind(&addr).unwrap();
    // Its own socket file goes with it.
    drop(listener);
    assert!(!anything_at(&path), "the socket file was left");
    // Nothing is at the path: a client finds nothing listening.
    let err = Client::new(&path).list().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::NotFound | ErrorKind::ConnectionRefused
        ),
        "{err}"
    );
    std::fs::write(&path, "kept").unwrap();
    let err = Listener::bind(&addr).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
}
