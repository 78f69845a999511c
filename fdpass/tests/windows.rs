//! `fdpass` on Windows, run under Wine in CI: a server built with
//! io-fdpass restarted five times through `fdpass hold` while a client
//! counts every failed request; a program written for the listenfd crate
//! adopting what `fdpass listen` and `fdpass fetch` hand it; and the
//! hostile cases: a client that never answers, a holder and a client that
//! each name another process's pid; what Windows cannot do, refused with
//! its exit status; and a holder at an `AF_UNIX` path, refused with its
//! exit status where Windows has no `AF_UNIX` (Wine 8), served where it
//! has.

#![cfg(windows)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::AsRawSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::activation::ListenFds;
use io_fdpass_test_support::http::{self, Tally};
use io_fdpass_test_support::{
    skip_with_af_unix, skip_without_af_unix, temp_path, wait_until, TempDir,
};

const FDPASS: &str = env!("CARGO_BIN_EXE_fdpass");

/// Set in a re-run of this test binary that serves HTTP: the holder's
/// address.
const SERVE: &str = "FDPASS_TEST_SERVE_HOLDER";

fn fdpass() -> Command {
    let mut command = Command::new(FDPASS);
    command.stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// A free loopback port, found by binding port 0.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test at a time: under Wine each lookup in the connection table costs
/// in proportion to every connection of the machine, and the restart
/// test's client makes many.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An `fdpass hold` of its own, stopped when dropped.
struct Holder {
    child: Child,
    addr: String,
}

impl Holder {
    fn start(args: &[&str]) -> Holder {
        Holder::at(&format!("tcp:127.0.0.1:{}", free_port()), args)
    }

    /// A holder at `addr`: a port, or a path.
    fn at(addr: &str, args: &[&str]) -> Holder {
        let addr = addr.to_owned();
        let child = fdpass()
            .arg("hold")
            .arg(&addr)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let holder = Holder { child, addr };
        // Waiting for the holder to start is the one wait that may retry.
        wait_until(
            || {
                output(fdpass().args(["list", &holder.addr]))
                    .status
                    .success()
            },
            || format!("the holder at {} never answered", holder.addr),
        );
        holder
    }

    /// Has `fdpass listen` open a listener on a free loopback port and
    /// `fdpass store` give it to this holder as `web`: the port.
    fn store_a_listener(&self) -> u16 {
        let port = free_port();
        let listen = output(fdpass().args([
            "listen",
            &format!("tcp:127.0.0.1:{port}"),
            "--name",
            "web",
            "--",
            FDPASS,
            "store",
            &self.addr,
            "web",
        ]));
        assert!(listen.status.success(), "{listen:?}");
        port
    }

    fn list(&self) -> Vec<String> {
        let out = output(fdpass().args(["list", "--json", &self.addr]));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split("\"name\":\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a re-run as the server: takes `web`, gives the holder a copy back
/// for the next generation, and answers each request with its pid until
/// its standard input closes; then it finishes the request in hand and
/// exits.
fn serve(holder: &str) -> ! {
    let mut fds = ListenFds::take().unwrap();
    let index = fds.index_of("web").unwrap();
    let listener = fds.take_tcp_listener(index).unwrap();
    io_fdpass::holder::Client::new(holder)
        .timeout(LOADED)
        .store("web", &listener)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::SeqCst);
        }
    });
    let answer = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nserved by {}\n",
        std::process::id()
    );
    while !stop.load(Ordering::SeqCst) {
        // Accept only when a connection waits, so that a stop is seen
        // within a poll's time; another generation may take the
        // connection first, and then the next one is served here.
        if !readable(&listener, 50) {
            continue;
        }
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(answer.as_bytes());
    }
    std::process::exit(0)
}

/// Whether `listener` has a connection waiting within `ms`.
fn readable(listener: &TcpListener, ms: i32) -> bool {
    use windows_sys::Win32::Networking::WinSock::{WSAPoll, POLLRDNORM, WSAPOLLFD};
    let mut poll = WSAPOLLFD {
        fd: listener.as_raw_socket() as usize,
        events: POLLRDNORM,
        revents: 0,
    };
    // SAFETY: one valid WSAPOLLFD, alive for the call.
    unsafe { WSAPoll(&raw mut poll, 1, ms) > 0 }
}

/// One generation: `fdpass fetch --take HOLDER web -- THIS-TEST`, its
/// standard input a pipe whose closing stops it.
fn generation(holder: &Holder) -> Child {
    let me = std::env::current_exe().unwrap();
    Command::new(FDPASS)
        .args([
            "fetch",
            "--timeout",
            "60s",
            "--take",
            &holder.addr,
            "web",
            "--",
        ])
        .arg(me)
        .args([
            "five_restarts_through_the_holder_and_not_one_request_fails",
            "--exact",
            "--nocapture",
        ])
        .env(SERVE, &holder.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Stops a generation: its standard input closes, and it exits once the
/// request in hand is answered, as `fdpass fetch` does after it.
fn stop(mut generation: Child) {
    drop(generation.stdin.take());
    let status = generation.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// What the client has seen: the tally, and the pid of each generation
/// that answered, in the order of their first answers.
#[derive(Debug, Default)]
struct Seen {
    tally: Tally,
    served_by: Vec<String>,
}

/// How many answers the client gets between two steps of a restart.
const PACE: usize = 50;

/// The pause between two requests of the client. Each request leaves a
/// connection in `TIME_WAIT` for a minute, and under Wine a lookup in the
/// connection table (each handover makes one) reads every row, at a cost
/// that grows with the rows: a client with no pause at all fills the table
/// faster than the handovers can read it.
const PAUSE: Duration = Duration::from_millis(10);

/// What a client of the holder waits under that load.
const LOADED: Duration = Duration::from_secs(60);

#[test]
fn five_restarts_through_the_holder_and_not_one_request_fails() {
    if let Ok(holder) = std::env::var(SERVE) {
        serve(&holder);
    }
    let _serial = serial();
    let holder = Holder::start(&["--client-timeout", "60s"]);
    let port = holder.store_a_listener();
    assert_eq!(holder.list(), ["web"]);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut current = generation(&holder);
    let _ = http::wait_until_answers(addr);
    let stopping = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = std::thread::spawn({
        let (stopping, seen) = (stopping.clone(), seen.clone());
        move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(PAUSE);
                let answer = http::get(addr);
                let mut seen = seen.lock().unwrap();
                seen.tally.count(&answer);
                if let Ok(answer) = answer {
                    let pid = answer.trim_end().rsplit(' ').next().unwrap().to_owned();
                    if !seen.served_by.contains(&pid) {
                        seen.served_by.push(pid);
                    }
                }
            }
        }
    });
    let wait_for = |what: &str, done: &dyn Fn(&Seen) -> bool| {
        wait_until(
            || done(&seen.lock().unwrap()),
            || format!("{what}; the client saw {:?}", seen.lock().unwrap()),
        );
    };
    let more = |what: &str| {
        let now = seen.lock().unwrap().tally.answered;
        wait_for(what, &|seen| seen.tally.answered >= now + PACE);
    };
    more("the first generation answers");
    for restart in 1..=5 {
        let next = generation(&holder);
        wait_for("the new generation answers", &|seen| {
            seen.served_by.len() > restart
        });
        stop(std::mem::replace(&mut current, next));
        assert_eq!(holder.list(), ["web"], "the holder holds the socket again");
        more("the new generation answers alone");
    }
    stopping.store(true, Ordering::Relaxed);
    client.join().unwrap();
    stop(current);

    let seen = seen.lock().unwrap();
    println!(
        "restart test under Windows: {}; served by {} generations",
        seen.tally,
        seen.served_by.len()
    );
    seen.tally.assert_none_failed();
    assert_eq!(seen.served_by.len(), 6, "every generation served");
}

/// Set in a re-run of this test binary that adopts its listener with the
/// listenfd crate.
const LISTENFD: &str = "FDPASS_TEST_LISTENFD";

/// `fdpass ARGS -- THIS-TEST` as a program written for listenfd: it takes
/// socket 0 as a TCP listener and answers one connection with its pid.
/// Returns what a client of `port` read.
fn listenfd_program_behind(args: &[&str], port: u16) -> String {
    let test = "a_program_using_listenfd_adopts_what_listen_and_fetch_hand_it";
    let mut program = fdpass()
        .args(args)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env(LISTENFD, "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Once `fdpass` has bound the listener, the connection waits in its
    // queue until the program accepts it.
    let client = http::wait_until_connects(SocketAddr::from(([127, 0, 0, 1], port)));
    client.set_read_timeout(Some(LOADED)).unwrap();
    let mut answer = String::new();
    (&client).read_to_string(&mut answer).unwrap();
    let status = program.wait().unwrap();
    assert!(status.success(), "{args:?}: {status:?}");
    answer
}

#[test]
fn a_program_using_listenfd_adopts_what_listen_and_fetch_hand_it() {
    if std::env::var_os(LISTENFD).is_some() {
        // listenfd's own request: its form of systemfd's protocol.
        let mut fds = listenfd::ListenFd::from_env();
        let web = fds.take_tcp_listener(0).unwrap().unwrap();
        let (mut connection, _) = web.accept().unwrap();
        write!(connection, "listenfd took it in {}", std::process::id()).unwrap();
        std::process::exit(0);
    }
    let _serial = serial();
    let port = free_port();
    let answer = listenfd_program_behind(&["listen", &format!("tcp:127.0.0.1:{port}")], port);
    assert!(answer.starts_with("listenfd took it in "), "{answer:?}");

    let holder = Holder::start(&[]);
    let port = holder.store_a_listener();
    let answer = listenfd_program_behind(&["fetch", &holder.addr, "web"], port);
    assert!(answer.starts_with("listenfd took it in "), "{answer:?}");
    assert_eq!(
        holder.list(),
        ["web"],
        "fetch without --take leaves it held"
    );
}

/// Reads the holder's greeting: its two lines.
fn greeting(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    reader.read_line(&mut text).unwrap();
    reader.read_line(&mut text).unwrap();
    text
}

#[test]
fn a_client_that_never_answers_holds_up_no_other_and_is_let_go() {
    let _serial = serial();
    let holder = Holder::start(&["--client-timeout", "10s"]);
    let addr = holder.addr.strip_prefix("tcp:").unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    assert!(greeting(&silent).starts_with("fdpass-hold 1\npid "));
    // Another client is served while the first says nothing.
    assert_eq!(holder.list(), Vec::<String>::new());
    // Its time up, the holder closes the connection.
    let mut rest = Vec::new();
    (&silent).read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"");
    assert_eq!(holder.list(), Vec::<String>::new());
}

#[test]
fn a_client_that_names_another_process_is_refused() {
    let _serial = serial();
    let holder = Holder::start(&[]);
    let other = Holder::start(&[]);
    let addr = holder.addr.strip_prefix("tcp:").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    let greeting = greeting(&stream);
    let holder_pid: u32 = greeting
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(holder_pid, holder.child.id());
    // A true challenge for the holder, and the pid of another process as
    // this client's: the holder's challenge goes to that process, which
    // alone could answer it.
    let nonce = UdpSocket::bind("127.0.0.1:0").unwrap();
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"0123456789abcdef", nonce.local_addr().unwrap())
        .unwrap();
    stream
        .write_all(format!("prove {}\n", other.child.id()).as_bytes())
        .unwrap();
    stream.write_all(&record_for(&nonce, holder_pid)).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut proved = String::new();
    reader.read_line(&mut proved).unwrap();
    assert_eq!(proved, format!("proved {}\n", hex(b"0123456789abcdef")));
    let mut record = vec![0u8; 628];
    reader.read_exact(&mut record).unwrap();
    // Guessed: the nonce waits on a socket made for the other process.
    stream
        .write_all(format!("proved {}\n", "00".repeat(16)).as_bytes())
        .unwrap();
    stream.write_all(b"list\n").unwrap();
    let mut answer = String::new();
    (&stream).read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error denied "), "{answer:?}");
    assert!(answer.contains("could not prove it"), "{answer:?}");
    assert_eq!(holder.list(), Vec::<String>::new());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `WSAPROTOCOL_INFOW` of `socket` made for process `pid`.
fn record_for(socket: &impl AsRawSocket, pid: u32) -> Vec<u8> {
    use windows_sys::Win32::Networking::WinSock::{WSADuplicateSocketW, WSAPROTOCOL_INFOW};
    // SAFETY: plain data; all-zero is a valid value.
    let mut info: WSAPROTOCOL_INFOW = unsafe { std::mem::zeroed() };
    // SAFETY: a live socket, and a record of the type the call fills.
    let result =
        unsafe { WSADuplicateSocketW(socket.as_raw_socket() as usize, pid, &raw mut info) };
    assert_eq!(result, 0);
    // SAFETY: the record is plain data, read as its bytes.
    unsafe {
        std::slice::from_raw_parts(
            std::ptr::from_ref(&info).cast::<u8>(),
            std::mem::size_of::<WSAPROTOCOL_INFOW>(),
        )
    }
    .to_vec()
}

#[test]
fn a_holder_that_names_another_process_is_not_trusted() {
    let _serial = serial();
    // The real holder's pid, claimed by an impostor at another address.
    let holder = Holder::start(&[]);
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    let claimed = holder.child.id();
    let seen = std::thread::spawn(move || {
        let (mut stream, _) = impostor.accept().unwrap();
        stream
            .write_all(format!("fdpass-hold 1\npid {claimed}\n").as_bytes())
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Whatever the client sends, the impostor cannot answer the nonce
        // waiting on a socket made for the real holder: it guesses.
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got
            .iter()
            .position(|&b| b == b'\n')
            .is_none_or(|end| got.len() < end + 1 + 628)
        {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(format!("proved {}\n", "00".repeat(16)).as_bytes());
        let _ = stream.read_to_end(&mut got);
        got
    });
    let out = output(fdpass().args(["drop", &format!("tcp:127.0.0.1:{port}"), "web"]));
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("could not prove it"), "{message}");
    assert!(message.contains("nothing was sent"), "{message}");
    let got = seen.join().unwrap();
    // Nothing but the challenge: no request line reached the impostor.
    assert!(got.starts_with(b"prove "), "{got:?}");
    assert!(!String::from_utf8_lossy(&got).contains("drop"), "{got:?}");
}

#[test]
fn what_windows_cannot_do_is_refused_with_its_exit_status() {
    let _serial = serial();
    // 108 bytes: one more than sun_path holds with its NUL.
    let too_long = format!("C:\\{}", "d".repeat(105));
    for (args, code, says) in [
        (
            &["adopt", "1", "3", "--", "x"][..],
            71,
            "does not run on Windows",
        ),
        (
            &["send", "tcp:127.0.0.1:1", "0"][..],
            71,
            "does not run on Windows",
        ),
        (&["fds", "1"][..], 71, "does not run on Windows"),
        (&["list", too_long.as_str()][..], 64, "at most 107"),
        (&["list", "tcp:10.0.0.1:7000"][..], 64, "loopback"),
        (&["store", "tcp:127.0.0.1:1", "web"][..], 66, "none was"),
    ] {
        let out = output(fdpass().args(args));
        let message = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {message}");
        assert!(message.contains(says), "{args:?}: {message}");
    }
}

/// Whether anything is at `path`, a socket file included (`exists`
/// follows the reparse point a socket file is).
fn anything_at(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[test]
fn a_holder_path_where_windows_has_no_af_unix_exits_71() {
    let _serial = serial();
    if skip_with_af_unix("a_holder_path_where_windows_has_no_af_unix_exits_71") {
        return;
    }
    let path = temp_path("hold.sock");
    let text = path.to_str().unwrap();
    for args in [
        &["hold", text][..],
        &["list", text][..],
        &["drop", text, "web"][..],
        &["fetch", text, "web", "--", "cmd"][..],
    ] {
        let out = output(fdpass().args(args));
        let message = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(71), "{args:?}: {message}");
        for says in [text, "no AF_UNIX sockets", "tcp:127.0.0.1:PORT"] {
            assert!(
                message.contains(says),
                "{args:?}: {says:?} not in {message}"
            );
        }
    }
    assert!(!anything_at(&path), "something was left at {path:?}");
}

#[test]
fn a_holder_at_a_path_serves_and_the_next_replaces_its_stale_file() {
    let _serial = serial();
    if skip_without_af_unix("a_holder_at_a_path_serves_and_the_next_replaces_its_stale_file") {
        return;
    }
    let dir = TempDir::new("hold-path");
    let path = dir.join("h.sock");
    let text = path.to_str().unwrap();
    let holder = Holder::at(text, &[]);
    let out = output(fdpass().args(["hold", text]));
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{message}");
    assert!(
        message.contains("another process is listening"),
        "{message}"
    );
    holder.store_a_listener();
    assert_eq!(holder.list(), ["web"]);
    // Ended by TerminateProcess, the holder leaves its socket file, which
    // the next one replaces.
    drop(holder);
    assert!(anything_at(&path), "no socket file left to replace");
    let holder = Holder::at(text, &[]);
    assert_eq!(holder.list(), Vec::<String>::new());
}
