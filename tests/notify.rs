//! `io_fdpass::notify` against a receiver of `$NOTIFY_SOCKET` that checks
//! the text and fds of each datagram, as systemd's would; and
//! `io_fdpass::peer_credentials`; and `notify::Listener`, the other end.
#![cfg(unix)]

mod util;

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::Command;

use io_fdpass::notify::{self, Listener, Notifier, MAX_DATAGRAM};
use util::{file_with, read_all, NoLeak};

/// A bound datagram socket standing in for systemd's notify socket.
struct Receiver {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Receiver {
    fn new() -> Receiver {
        let path = util::temp_path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Receiver { socket, path }
    }

    /// The next datagram's text and fds; `None` when none is waiting.
    fn next(&self) -> Option<(String, Vec<OwnedFd>)> {
        let mut data = [0; 512];
        let mut fds = [const { None }; 8];
        match io_fdpass::recv_fds(&self.socket, &mut data, &mut fds) {
            Ok(got) => {
                assert!(got.is_complete(), "{got:?}");
                let text = String::from_utf8(data[..got.bytes].to_vec()).unwrap();
                Some((text, fds.into_iter().flatten().collect()))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Receiver {
    /// The next datagram's text, which must have come without fds.
    fn next_text(&self) -> String {
        let (text, fds) = self.next().expect("a datagram");
        assert!(fds.is_empty(), "{text:?} came with {} fd(s)", fds.len());
        text
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn each_message_arrives_with_its_text_and_fds() {
    let check = NoLeak::start();
    let receiver = Receiver::new();
    let to = Notifier::new(&receiver.path);
    let (one, two) = (file_with("one"), file_with("two"));

    to.send("READY=1", &[]).unwrap();
    assert_eq!(receiver.next_text(), "READY=1");
    to.send("FDSTORE=1\nFDNAME=web", &[one.as_fd(), two.as_fd()])
        .unwrap();
    let (text, fds) = receiver.next().unwrap();
    assert_eq!(text, "FDSTORE=1\nFDNAME=web");
    let texts: Vec<_> = fds.into_iter().map(read_all).collect();
    assert_eq!(texts, ["one", "two"]);
    assert!(receiver.next().is_none());
    drop((receiver, one, two));
    check.assert_unchanged();
}

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_notify_socket_is_written_with_an_at() {
    use std::os::linux::net::SocketAddrExt;
    let check = NoLeak::start();
    let name = format!("io-fdpass-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    Notifier::new(format!("@{name}"))
        .send("READY=1", &[])
        .unwrap();
    let mut buf = [0; 16];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    drop(socket);
    check.assert_unchanged();
}

#[test]
fn a_missing_notify_socket_is_not_found_and_leaks_nothing() {
    let check = NoLeak::start();
    let gone = util::temp_path("gone.sock");
    let err = Notifier::new(&gone).send("READY=1", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("gone.sock"), "{err}");
    check.assert_unchanged();
}

const UNDER_SYSTEMD: &str = "the_calls_speak_to_the_socket_of_notify_socket";

/// The free functions read `$NOTIFY_SOCKET`, so they run in a child that has
/// it set.
#[test]
fn the_calls_speak_to_the_socket_of_notify_socket() {
    if util::is_child(UNDER_SYSTEMD) {
        let file = file_with("kept");
        assert!(notify::store_fds("web", &[file.as_fd()]).unwrap());
        assert!(notify::remove_fds("web").unwrap());
        assert!(notify::ready().unwrap());
        for bad in ["", "a:b", "new\nline"] {
            let err = notify::store_fds(bad, &[file.as_fd()]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
            let err = notify::remove_fds(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        }
        let err = notify::store_fds("web", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        return;
    }
    let check = NoLeak::start();
    let receiver = Receiver::new();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(util::child_args(UNDER_SYSTEMD))
        .env(util::CHILD_ENV, UNDER_SYSTEMD)
        .env("NOTIFY_SOCKET", &receiver.path);
    util::assert_child_succeeded(UNDER_SYSTEMD, &child.output().unwrap());

    let (text, fds) = receiver.next().unwrap();
    assert_eq!(text, "FDSTORE=1\nFDNAME=web");
    assert_eq!(fds.into_iter().map(read_all).collect::<Vec<_>>(), ["kept"]);
    assert_eq!(receiver.next_text(), "FDSTOREREMOVE=1\nFDNAME=web");
    assert_eq!(receiver.next_text(), "READY=1");
    assert!(receiver.next().is_none(), "a refused call sent something");
    drop(receiver);
    check.assert_unchanged();
}

const NOT_UNDER_SYSTEMD: &str = "without_notify_socket_nothing_is_sent";

#[test]
fn without_notify_socket_nothing_is_sent() {
    if util::is_child(NOT_UNDER_SYSTEMD) {
        assert!(Notifier::from_env().is_none());
        assert!(!notify::ready().unwrap());
        assert!(!notify::store_fds("web", &[std::io::stdin().as_fd()]).unwrap());
        assert!(!notify::remove_fds("web").unwrap());
        return;
    }
    let check = NoLeak::start();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(util::child_args(NOT_UNDER_SYSTEMD))
        .env(util::CHILD_ENV, NOT_UNDER_SYSTEMD)
        .env_remove("NOTIFY_SOCKET");
    util::assert_child_succeeded(NOT_UNDER_SYSTEMD, &child.output().unwrap());
    check.assert_unchanged();
}

/// The receiver reads what systemd's own `systemd-notify` sends, so that it
/// is a fair stand-in for systemd.
#[test]
fn the_receiver_reads_systemd_notify_alike() {
    let check = NoLeak::start();
    let receiver = Receiver::new();
    let out = util::peers::require("systemd-notify", &["--version"], "systemd")
        .args(["--ready", "--no-block"])
        .env("NOTIFY_SOCKET", &receiver.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = receiver.next_text();
    assert!(text.lines().any(|line| line == "READY=1"), "{text:?}");
    drop(receiver);
    check.assert_unchanged();
}

#[test]
fn peer_credentials_name_this_process() {
    let check = NoLeak::start();
    let (a, b) = UnixStream::pair().unwrap();
    let peer = io_fdpass::peer_credentials(&a).unwrap();
    assert_eq!(peer.uid, rustix::process::getuid().as_raw());
    assert_eq!(peer.gid, rustix::process::getgid().as_raw());
    #[cfg(any(target_os = "linux", target_os = "android"))]
    assert_eq!(peer.pid, Some(std::process::id()));
    if let Some(pidfd) = &peer.pidfd {
        assert!(util::is_cloexec(pidfd));
    }
    drop((peer, a, b));
    let err = io_fdpass::peer_credentials(file_with("no socket")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::NOTSOCK.raw_os_error())
    );
    check.assert_unchanged();
}

/// A datagram sent to `path` with a raw socket of this process.
fn send_raw(path: &std::path::Path, data: &[u8]) {
    let sent = UnixDatagram::unbound()
        .unwrap()
        .send_to(data, path)
        .unwrap();
    assert_eq!(sent, data.len());
}

#[test]
fn a_listener_hears_ready_among_other_messages() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    let check = NoLeak::start();
    let listener = Listener::new().unwrap();
    let path = listener.path().to_owned();
    let dir = path.parent().unwrap().to_owned();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());

    // Nothing said yet: the wait ends at its timeout.
    assert_eq!(listener.wait_ready(Some(Duration::ZERO)).unwrap(), None);
    assert_eq!(
        listener.recv(Some(Duration::from_millis(10))).unwrap(),
        None
    );
    // Another message, one too long, garbage, and READY=10: passed over.
    send_raw(&path, b"STATUS=starting");
    send_raw(&path, &[b'x'; MAX_DATAGRAM + 1]);
    send_raw(&path, b"\xff\x00READY\n=1");
    send_raw(&path, b"READY=10");
    send_raw(&path, b"STATUS=up\nREADY=1");
    let first = listener.recv(None).unwrap().unwrap();
    assert_eq!(first.bytes(), b"STATUS=starting");
    assert!(!first.says_ready());
    let ready = listener.wait_ready(None).unwrap().unwrap();
    assert_eq!(ready.bytes(), b"STATUS=up\nREADY=1");
    #[cfg(any(target_os = "linux", target_os = "android"))]
    assert_eq!(ready.pid(), Some(std::process::id()));
    assert_eq!(listener.wait_ready(Some(Duration::ZERO)).unwrap(), None);

    // Dropped: its socket and directory are gone.
    drop(listener);
    assert!(!dir.exists(), "{} is left", dir.display());
    check.assert_unchanged();
}

#[test]
fn a_listener_takes_no_fds() {
    use std::time::Duration;
    let check = NoLeak::start();
    let listener = Listener::new().unwrap();
    let file = file_with("not for the listener");
    let to = Notifier::new(listener.path());
    match to.send("FDSTORE=1\nFDNAME=x", &[file.as_fd(), file.as_fd()]) {
        // Refused by the kernel (SO_PASSRIGHTS off).
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        // Or taken and closed as they came.
        Ok(()) => {
            let got = listener.recv(Some(Duration::from_secs(60))).unwrap();
            assert_eq!(got.unwrap().bytes(), b"FDSTORE=1\nFDNAME=x");
        }
    }
    to.send("READY=1", &[]).unwrap();
    assert!(listener.wait_ready(None).unwrap().is_some());
    drop((listener, file));
    check.assert_unchanged();
}

#[test]
fn a_kept_listener_closes_its_socket_and_leaves_the_path() {
    let check = NoLeak::start();
    let listener = Listener::new().unwrap();
    let path = listener.keep();
    assert!(path.exists());
    // No one listens any more.
    let e = UnixDatagram::unbound()
        .unwrap()
        .send_to(b"READY=1", &path)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    check.assert_unchanged();
}
