//! What a restart hands the next generation besides listeners: state,
//! established connections with the bytes they had read, and a listener
//! adopted whatever its name. Each next generation here is this test binary
//! again, running one test as the child, which checks what it got before
//! it says it is ready: a byte lost or added makes the restart fail.
#![cfg(target_os = "linux")]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use io_fdpass::activation::{self, ListenFds};
use io_fdpass::notify;
use io_fdpass::restart::{self, Restart, STATE_NAME};
use rustix::process::{waitpid, Pid, WaitOptions};
use util::{assert_no_child, child_args, is_child, NoLeak, CHILD_ENV};

/// The bytes of a state `len` long: no two neighbours alike in a way that
/// a lost, doubled or moved byte would keep.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8))
        .collect()
}

/// Asserts that `got` is `want`, naming the first byte that differs.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8]) {
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("byte {at} of {} differs", want.len());
    }
    assert_eq!(got.len(), want.len(), "lengths differ");
}

/// The next generation: this test binary running the test `name`, with
/// `vars` set, and `SEEN` naming the file that says its restart is over.
fn next_generation(name: &str, vars: &[(&str, &str)]) -> Restart {
    let seen = util::temp_path("seen");
    let mut restart = Restart::command(std::env::current_exe().unwrap(), child_args(name))
        .env(CHILD_ENV, name)
        .env("SEEN", &seen)
        .timeout(Duration::from_secs(120));
    for (key, value) in vars {
        restart = restart.env(key, value);
    }
    restart
}

/// In the next generation: says it is ready, and stays until the restart
/// has seen it. A generation that exits before is a failed restart.
fn ready() {
    notify::ready().unwrap();
    let seen = std::env::var_os("SEEN").unwrap();
    util::wait_until(
        || Path::new(&seen).exists(),
        || "the restart never saw this generation ready".into(),
    );
}

/// Tells the ready next generation `pid` that its restart is over; its
/// `SEEN` file.
fn let_go(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let seen = environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"SEEN="))
        .map(|path| String::from_utf8(path.to_vec()).unwrap())
        .unwrap();
    std::fs::write(&seen, "").unwrap();
    seen
}

/// Lets the ready next generation `pid` go on, waits for it to exit, and
/// asserts that its test passed.
fn assert_succeeded(pid: u32) {
    let seen = let_go(pid);
    let (_, status) = waitpid(Pid::from_raw(pid as i32), WaitOptions::empty())
        .unwrap()
        .unwrap();
    std::fs::remove_file(&seen).unwrap();
    assert_eq!(status.exit_status(), Some(0), "the next generation failed");
}

/// Whether this process has an fd open on a memfd called `name`.
fn holds_memfd(name: &str) -> bool {
    util::open_fds()
        .iter()
        .any(|fd| fd.contains(&format!("/memfd:{name}")))
}

const BIG: usize = 64 << 20;

#[test]
fn a_state_of_64_mib_arrives_whole_once() {
    const NAME: &str = "a_state_of_64_mib_arrives_whole_once";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        let len: usize = std::env::var("STATE_LEN").unwrap().parse().unwrap();
        let state = restart::take_state(&mut fds).unwrap().expect("a state");
        assert_same(&state, &pattern(len));
        // Once: the fd is closed, and a second take finds nothing.
        assert!(!holds_memfd(STATE_NAME), "{:?}", util::open_fds());
        assert_eq!(restart::take_state(&mut fds).unwrap(), None);
        ready();
        return;
    }
    let check = NoLeak::start();
    for len in [0, 1, 7, 4097, BIG] {
        let next = next_generation(NAME, &[("STATE_LEN", &len.to_string())])
            .state(&pattern(len))
            .unwrap()
            .spawn()
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_succeeded(next.pid());
    }
    check.assert_unchanged();
}

#[test]
fn a_second_state_replaces_the_first() {
    const NAME: &str = "a_second_state_replaces_the_first";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        assert_eq!(fds.len(), 1, "one state fd");
        assert_eq!(restart::take_state(&mut fds).unwrap().unwrap(), b"second");
        ready();
        return;
    }
    let check = NoLeak::start();
    let next = next_generation(NAME, &[])
        .state(b"first")
        .unwrap()
        .state(b"second")
        .unwrap()
        .spawn()
        .unwrap();
    assert_succeeded(next.pid());
    check.assert_unchanged();
}

#[test]
fn a_state_never_read_leaks_nothing() {
    const NAME: &str = "a_state_never_read_leaks_nothing";
    if is_child(NAME) {
        let fds = ListenFds::take().unwrap();
        assert!(holds_memfd(STATE_NAME), "{:?}", util::open_fds());
        // Inherited by nothing this generation starts.
        let fd = (3..10)
            .find(|&fd| {
                std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|target| target.to_string_lossy().contains(STATE_NAME))
            })
            .unwrap();
        // SAFETY: fd is open, owned by `fds`, and only looked at here.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        assert!(util::is_cloexec(borrowed));
        drop(fds);
        assert!(!holds_memfd(STATE_NAME), "{:?}", util::open_fds());
        ready();
        return;
    }
    let check = NoLeak::start();
    let next = next_generation(NAME, &[])
        .state(&pattern(1000))
        .unwrap()
        .spawn()
        .unwrap();
    assert_succeeded(next.pid());
    check.assert_unchanged();
}

/// A state file written by hand, as `Restart::state` documents it: magic,
/// kind 1, length and checksum, little endian, then the bytes.
fn handwritten(length: u64, bytes: &[u8]) -> std::fs::File {
    let mut text = b"IOFDPHO1".to_vec();
    text.extend_from_slice(&1u64.to_le_bytes());
    text.extend_from_slice(&length.to_le_bytes());
    text.extend_from_slice(&0u64.to_le_bytes());
    text.extend_from_slice(bytes);
    util::file_with(&String::from_utf8(text).unwrap())
}

#[test]
fn a_state_cut_short_damaged_or_foreign_is_invalid_data() {
    const NAME: &str = "a_state_cut_short_damaged_or_foreign_is_invalid_data";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        let before = util::fd_count();
        let e = restart::take_state(&mut fds).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
        eprintln!("refused: {e}");
        // The fd that carried it is closed all the same.
        assert_eq!(util::fd_count(), before - 1, "{:?}", util::open_fds());
        assert_eq!(restart::take_state(&mut fds).unwrap(), None);
        return;
    }
    let check = NoLeak::start();
    let cases = [
        ("cut short", handwritten(10, b"123456789")),
        ("added to", handwritten(10, b"12345678901")),
        ("damaged", handwritten(10, b"1234567890")),
        (
            "foreign",
            util::file_with("{\"a\": \"JSON state of another program\"}"),
        ),
        ("empty", util::file_with("")),
    ];
    for (what, file) in cases {
        let mut child = activation::Command::new(std::env::current_exe().unwrap())
            .args(child_args(NAME))
            .env(CHILD_ENV, NAME)
            .fd(STATE_NAME, &file)
            .unwrap()
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success(), "{what}: not refused");
    }
    check.assert_unchanged();
}

#[test]
fn the_handover_names_are_the_restarts_own() {
    let check = NoLeak::start();
    let file = util::file_with("x");
    for name in [STATE_NAME, restart::PENDING_NAME] {
        let e = Restart::command("true", [""; 0])
            .fd(name, &file)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    let e = Restart::command("true", [""; 0])
        .env("NOTIFY_SOCKET", "/elsewhere")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(file);
    check.assert_unchanged();
}

#[test]
fn a_restart_is_send_and_static() {
    fn movable<T: Send + 'static>(_: &T) {}
    let check = NoLeak::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let restart = Restart::command("true", [""; 0])
        .fd("http", &listener)
        .unwrap();
    // The listener may go: the restart holds its own copy.
    drop(listener);
    movable(&restart);
    let from_a_thread = std::thread::spawn(move || restart).join().unwrap();
    drop(from_a_thread);
    check.assert_unchanged();
}

/// A request the old generation handles itself.
const FIRST: &[u8] = b"GET /first HTTP/1.1\r\n\r\n";
/// The bytes of a request read by the old generation and not answered: the
/// second half of a pipelined pair, cut inside its head.
const PENDING: &[u8] = b"GET /second HTTP/1.1\r\nHost: te";
/// What the client sends once the next generation has its connection.
const AFTER: &[u8] = b"st\r\n\r\n";

#[test]
fn connections_go_with_the_bytes_they_had_read() {
    const NAME: &str = "connections_go_with_the_bytes_they_had_read";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        // The listener is found among connections and pending bytes.
        let listener = fds.take_only_tcp_listener().unwrap().expect("a listener");
        let tcp = fds.index_of("tcp-client").unwrap();
        let (mut tcp, pending) = restart::take_tcp_connection(&mut fds, tcp).unwrap();
        assert_same(&pending, PENDING);
        let big = fds.index_of("unix-client").unwrap();
        let (mut big, big_pending) = restart::take_unix_connection(&mut fds, big).unwrap();
        assert_same(&big_pending, &pattern(BIG / 16));
        let idle = fds.index_of("idle-client").unwrap();
        let (mut idle, idle_pending) = restart::take_unix_connection(&mut fds, idle).unwrap();
        assert!(idle_pending.is_empty());
        // Nothing is left: no pending fd was passed for the idle client.
        assert!((0..fds.len()).all(|i| fds.take_fd(i).is_none()));
        assert!(
            !holds_memfd(restart::PENDING_NAME),
            "{:?}",
            util::open_fds()
        );
        ready();
        // The request, whole: the pending bytes, then what came after.
        let mut rest = vec![0; AFTER.len()];
        tcp.read_exact(&mut rest).unwrap();
        let mut request = pending;
        request.extend_from_slice(&rest);
        tcp.write_all(&request).unwrap();
        big.write_all(&(big_pending.len() as u64).to_le_bytes())
            .unwrap();
        idle.write_all(b"still here").unwrap();
        drop(listener);
        return;
    }
    let check = NoLeak::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut served, _) = listener.accept().unwrap();
    client.write_all(FIRST).unwrap();
    client.write_all(PENDING).unwrap();
    let mut read = vec![0; FIRST.len() + PENDING.len()];
    served.read_exact(&mut read).unwrap();
    // The first request is handled here; the rest goes on.
    let (big_client, big_served) = UnixStream::pair().unwrap();
    let (mut idle_client, idle_served) = UnixStream::pair().unwrap();
    let next = next_generation(NAME, &[])
        .fd("http", &listener)
        .unwrap()
        .connection("tcp-client", &served, &read[FIRST.len()..])
        .unwrap()
        .connection("unix-client", &big_served, &pattern(BIG / 16))
        .unwrap()
        .connection("idle-client", &idle_served, b"")
        .unwrap()
        .spawn()
        .unwrap();
    let seen = let_go(next.pid());
    drop((served, big_served, idle_served, listener));
    client.write_all(AFTER).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let mut whole = PENDING.to_vec();
    whole.extend_from_slice(AFTER);
    assert_same(&answer, &whole);
    let mut count = [0; 8];
    (&big_client).read_exact(&mut count).unwrap();
    assert_eq!(u64::from_le_bytes(count), (BIG / 16) as u64);
    let mut text = String::new();
    idle_client.read_to_string(&mut text).unwrap();
    assert_eq!(text, "still here");
    let (_, status) = waitpid(Pid::from_raw(next.pid() as i32), WaitOptions::empty())
        .unwrap()
        .unwrap();
    assert_eq!(status.exit_status(), Some(0), "the next generation failed");
    std::fs::remove_file(seen).unwrap();
    drop((client, big_client, idle_client));
    check.assert_unchanged();
}

#[test]
fn the_only_listener_is_taken_whatever_its_name() {
    const NAME: &str = "the_only_listener_is_taken_whatever_its_name";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        let expected: usize = std::env::var("LISTENERS").unwrap().parse().unwrap();
        match (expected, fds.take_only_tcp_listener()) {
            (0, Ok(None)) => {}
            (1, Ok(Some(listener))) => {
                assert!(listener.local_addr().is_ok());
                // Taken: there is none left to take.
                assert!(fds.take_only_tcp_listener().unwrap().is_none());
            }
            (2, Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                assert!(e.to_string().contains("\"unknown\""), "{e}");
            }
            (n, other) => panic!("{n} listeners: {other:?}"),
        }
        assert!(fds.take_only_unix_listener().unwrap().is_some());
        return;
    }
    let check = NoLeak::start();
    let unix = util::temp_path("only");
    let unix_listener = std::os::unix::net::UnixListener::bind(&unix).unwrap();
    let (tcp_a, tcp_b) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (stream, _) = UnixStream::pair().unwrap();
    for (count, tcp) in [(0, vec![]), (1, vec![&tcp_a]), (2, vec![&tcp_a, &tcp_b])] {
        let mut command = activation::Command::new(std::env::current_exe().unwrap())
            .args(child_args(NAME))
            .env(CHILD_ENV, NAME)
            .env("LISTENERS", count.to_string())
            .fd("unknown", &stream)
            .unwrap()
            .fd("unix", &unix_listener)
            .unwrap();
        for listener in tcp {
            command = command.fd("unknown", listener).unwrap();
        }
        let status = command.spawn().unwrap().wait().unwrap();
        assert!(status.success(), "{count} TCP listeners");
    }
    drop((unix_listener, tcp_a, tcp_b, stream));
    std::fs::remove_file(&unix).unwrap();
    check.assert_unchanged();
}

#[test]
fn a_stream_is_not_taken_as_a_listener_nor_a_listener_as_a_stream() {
    const NAME: &str = "a_stream_is_not_taken_as_a_listener_nor_a_listener_as_a_stream";
    if is_child(NAME) {
        let mut fds = ListenFds::take().unwrap();
        let e = fds.take_tcp_stream(0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = fds.take_unix_stream(0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = fds.take_tcp_listener(1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // Each refused fd stays to be taken as what it is.
        fds.take_tcp_listener(0).unwrap();
        fds.take_tcp_stream(1).unwrap();
        return;
    }
    let check = NoLeak::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let status = activation::Command::new(std::env::current_exe().unwrap())
        .args(child_args(NAME))
        .env(CHILD_ENV, NAME)
        .fd("listener", &listener)
        .unwrap()
        .fd("stream", &stream)
        .unwrap()
        .spawn()
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.success());
    drop((listener, stream));
    check.assert_unchanged();
}

#[cfg(feature = "tokio")]
mod not_blocking {
    use super::*;

    /// Waits until `path` exists, then says it is ready.
    #[test]
    fn the_runtime_serves_while_the_next_generation_starts() {
        const NAME: &str = "not_blocking::the_runtime_serves_while_the_next_generation_starts";
        if is_child(NAME) {
            let go = std::env::var("GO").unwrap();
            util::wait_until(|| Path::new(&go).exists(), || "never told to go".into());
            ready();
            return;
        }
        let check = util::no_leak_after_tokio();
        let go = util::temp_path("go");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let next = runtime.block_on(async {
            let restart = next_generation(NAME, &[("GO", go.to_str().unwrap())]).spawn_async();
            // The one thread of the runtime must be free for this task to
            // tell the next generation to go: were the wait blocking, the
            // task would never run, and the restart would time out.
            let told = {
                let go = go.clone();
                tokio::spawn(async move { std::fs::write(&go, "").unwrap() })
            };
            let next = restart.await;
            told.await.unwrap();
            next
        });
        let next = next.expect("ready");
        assert_succeeded(next.pid());
        drop(runtime);
        std::fs::remove_file(&go).unwrap();
        check.assert_unchanged();
    }

    #[test]
    fn an_async_restart_that_fails_leaves_nothing() {
        let check = util::no_leak_after_tokio();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let e = Restart::command("sh", ["-c", "exit 3"])
                .fd("http", &listener)
                .unwrap()
                .spawn_async()
                .await
                .unwrap_err();
            assert!(e.to_string().contains("exited with status 3"), "{e}");
            let e = Restart::command("sleep", ["1000"])
                .timeout(Duration::from_millis(200))
                .spawn_async()
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
            let e = Restart::command("/nonexistent/io-fdpass", [""; 0])
                .spawn_async()
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        });
        assert_no_child();
        drop((runtime, listener));
        check.assert_unchanged();
    }

    #[test]
    fn a_dropped_async_restart_kills_the_next_generation() {
        let check = util::no_leak_after_tokio();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let restart = Restart::command("sleep", ["1000"]).spawn_async();
            // It has started the next generation by the time it times out
            // here; then it is dropped.
            let waited = tokio::time::timeout(Duration::from_millis(200), restart).await;
            assert!(waited.is_err(), "a sleep is never ready");
            // A restart may run again: the first let go of its claim.
            let e = Restart::command("/nonexistent/io-fdpass", [""; 0])
                .spawn_async()
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        });
        // The runtime's end waits for its blocking threads: the kill and
        // the reaping are done.
        drop(runtime);
        assert_no_child();
        check.assert_unchanged();
    }
}
