//! The socket handover on Windows, with real second processes: sockets
//! handed by `activation::Command` and adopted by `ListenFds::take` with
//! their names; and each hostile case: a wrong secret, a peer that names
//! another pid or is not the pid it names, an answer cut short or of
//! junk, a client that never speaks, a program that never asks. Each side
//! checks that its handle count is unchanged after a failure.

#![cfg(windows)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use io_fdpass::activation::{Command, ListenFds};
use io_fdpass_test_support::NoLeak;

/// The role a re-run of this test binary plays, and the port of the
/// parent's side channel.
const ROLE: &str = "IO_FDPASS_TEST_ROLE";
const PORT: &str = "IO_FDPASS_TEST_PORT";

/// A side channel between the test and the program it starts.
fn side_channel() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// This test binary, re-run as `role` in the test `test`, with the side
/// channel `channel`.
fn this_test<'a>(test: &str, role: &str, channel: &TcpListener) -> Command<'a> {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PORT, channel.local_addr().unwrap().port().to_string())
}

/// In a re-run: its role and its side channel to the test.
fn as_program() -> Option<(String, TcpStream)> {
    let role = std::env::var(ROLE).ok()?;
    let port: u16 = std::env::var(PORT).unwrap().parse().unwrap();
    Some((role, TcpStream::connect(("127.0.0.1", port)).unwrap()))
}

/// One line from the other side of a side channel.
fn line(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

fn say(mut stream: &TcpStream, text: &str) {
    stream.write_all(format!("{text}\n").as_bytes()).unwrap();
}

/// The program's side of most tests: takes its sockets and says how it
/// went on the side channel; each error is said with its kind, and the
/// handle count after it.
fn take_and_tell(channel: &TcpStream) -> Option<ListenFds> {
    let check = NoLeak::start();
    match ListenFds::take() {
        Ok(fds) => Some(fds),
        Err(e) => {
            check.assert_unchanged();
            say(channel, &format!("error {:?} {e}", e.kind()));
            None
        }
    }
}

#[test]
fn sockets_are_adopted_by_name_and_serve() {
    if let Some((_, channel)) = as_program() {
        let mut fds = take_and_tell(&channel).unwrap();
        assert_eq!(std::env::var_os("SYSTEMFD_SOCKET_SERVER"), None);
        assert_eq!(std::env::var_os("LISTEN_FDNAMES"), None);
        assert_eq!(
            (fds.len(), fds.name(0), fds.name(1)),
            (2, Some("web"), Some("dns"))
        );
        let dns = fds.index_of("dns").unwrap();
        let wrong = fds.take_tcp_listener(dns).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::InvalidInput, "{wrong}");
        assert!(wrong.to_string().contains("a UDP socket"), "{wrong}");
        let udp = fds.take_udp_socket(dns).unwrap();
        let web = fds.take_tcp_listener(fds.index_of("web").unwrap()).unwrap();
        let again = fds.take_tcp_listener(0).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
        say(&channel, &format!("serving {}", udp.local_addr().unwrap()));
        let (mut connection, _) = web.accept().unwrap();
        write!(connection, "hello from {}", std::process::id()).unwrap();
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut program = this_test("sockets_are_adopted_by_name_and_serve", "adopt", &channel)
        .fd("web", &web)
        .unwrap()
        .fd("dns", &dns)
        .unwrap()
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    program.wait_handover().unwrap();
    assert_eq!(
        line(&told),
        format!("serving {}", dns.local_addr().unwrap())
    );
    let mut answer = String::new();
    let mut client = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("hello from {}", program.id()));
    assert!(program.wait().unwrap().success());
    drop((told, client, web, dns, channel, program));
    check.assert_unchanged();
}

#[test]
fn a_wrong_secret_is_refused_and_leaves_nothing_open() {
    if let Some((_, channel)) = as_program() {
        std::env::set_var(
            "SYSTEMFD_SOCKET_SECRET",
            "59fb60fe-2634-4ec8-aa81-038793888c8e",
        );
        assert!(take_and_tell(&channel).is_none());
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut program = this_test(
        "a_wrong_secret_is_refused_and_leaves_nothing_open",
        "wrong",
        &channel,
    )
    .fd("web", &web)
    .unwrap()
    .spawn()
    .unwrap();
    let (told, _) = channel.accept().unwrap();
    let said = line(&told);
    assert!(said.starts_with("error PermissionDenied"), "{said}");
    assert!(said.contains("SYSTEMFD_SOCKET_SECRET"), "{said}");
    assert!(program.wait().unwrap().success());
    let e = program.wait_handover().unwrap_err();
    assert!(e.to_string().contains("wrong secret"), "{e}");
    assert!(e.to_string().contains("exited before"), "{e}");
    drop((told, web, channel, program));
    check.assert_unchanged();
}

#[test]
fn a_peer_naming_another_pid_or_not_the_pid_it_names_is_refused() {
    if let Some((_, channel)) = as_program() {
        // First, as a hostile program: its parent's pid, with the secret.
        let server = std::env::var("SYSTEMFD_SOCKET_SERVER").unwrap();
        let secret = std::env::var("SYSTEMFD_SOCKET_SECRET").unwrap();
        let parent = line(&channel);
        let mut ask = TcpStream::connect(&server).unwrap();
        write!(ask, "{secret}|{parent}").unwrap();
        ask.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        ask.read_to_end(&mut got).unwrap();
        say(&channel, &format!("{server} {secret} got {}", got.len()));
        // Then as itself, once the test has tried to pass for it.
        assert_eq!(line(&channel), "go");
        let fds = take_and_tell(&channel).unwrap();
        say(&channel, &format!("took {}", fds.len()));
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let test = "a_peer_naming_another_pid_or_not_the_pid_it_names_is_refused";
    let mut program = this_test(test, "spoof", &channel)
        .fd("web", &web)
        .unwrap()
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    say(&told, &std::process::id().to_string());
    let said = line(&told);
    let [server, secret, "got", "0"] = said.split(' ').collect::<Vec<_>>()[..] else {
        panic!("the program says {said:?}")
    };
    // This process knows the secret now, and names the program's pid:
    // Windows says who is at the other end of the connection (asked while
    // it is whole, in the line form of io-fdpass's server).
    let mut ask = TcpStream::connect(server).unwrap();
    writeln!(ask, "{secret}|{}", program.id()).unwrap();
    let mut got = Vec::new();
    ask.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        0,
        "sockets went to a process that is not the program"
    );
    say(&told, "go");
    assert_eq!(line(&told), "took 1");
    program.wait_handover().unwrap();
    assert!(program.wait().unwrap().success());
    drop((told, ask, web, channel, program));
    check.assert_unchanged();
}

/// Runs this test binary as `role` under a fake handover server of this
/// process's, which answers the request with `answer`; returns what the
/// program said.
fn against_a_fake_server(test: &str, role: &str, answer: &[u8]) -> String {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let channel = side_channel();
    let mut program = StdCommand::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PORT, channel.local_addr().unwrap().port().to_string())
        .env(
            "SYSTEMFD_SOCKET_SERVER",
            server.local_addr().unwrap().to_string(),
        )
        .env(
            "SYSTEMFD_SOCKET_SECRET",
            "59fb60fe-2634-4ec8-aa81-038793888c8e",
        )
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    let (asked, _) = server.accept().unwrap();
    // LISTEN_FDS is set, so the request is of the line form.
    let expected = format!("59fb60fe-2634-4ec8-aa81-038793888c8e|{}", program.id());
    assert_eq!(line(&asked), expected);
    let mut asked = asked;
    asked.write_all(answer).unwrap();
    drop(asked);
    let said = line(&told);
    assert!(program.wait().unwrap().success());
    said
}

#[test]
fn an_answer_cut_short_or_of_junk_is_an_error_and_leaves_nothing_open() {
    if let Some((_, channel)) = as_program() {
        assert!(take_and_tell(&channel).is_none());
        return;
    }
    // Counting handles, so that no other test counts meanwhile.
    let check = NoLeak::start();
    let test = "an_answer_cut_short_or_of_junk_is_an_error_and_leaves_nothing_open";
    let said = against_a_fake_server(test, "cut", &[1; 300]);
    assert!(said.starts_with("error UnexpectedEof"), "{said}");
    assert!(said.contains("cut short"), "{said}");
    let said = against_a_fake_server(test, "junk", &[0x5a; 628]);
    assert!(said.starts_with("error InvalidData"), "{said}");
    assert!(said.contains("cannot be opened"), "{said}");
    let said = against_a_fake_server(test, "none", &[]);
    assert!(said.starts_with("error PermissionDenied"), "{said}");
    check.assert_unchanged();
}

#[test]
fn a_client_that_never_speaks_holds_up_nothing_and_is_let_go() {
    if let Some((_, channel)) = as_program() {
        let server = std::env::var("SYSTEMFD_SOCKET_SERVER").unwrap();
        let mut silent = TcpStream::connect(&server).unwrap();
        let fds = take_and_tell(&channel).unwrap();
        // The server closes the silent connection once its time is up.
        silent
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut got = Vec::new();
        let end = silent.read_to_end(&mut got).map(|_| got.len());
        say(&channel, &format!("took {} then {end:?}", fds.len()));
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let test = "a_client_that_never_speaks_holds_up_nothing_and_is_let_go";
    let mut program = this_test(test, "silent", &channel)
        .fd("web", &web)
        .unwrap()
        .timeout(Duration::from_secs(3))
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    let said = line(&told);
    assert!(
        said == "took 1 then Ok(0)" || said.starts_with("took 1 then Err"),
        "{said}"
    );
    program.wait_handover().unwrap();
    assert!(program.wait().unwrap().success());
    drop((told, web, channel, program));
    check.assert_unchanged();
}

#[test]
fn a_program_that_never_asks_ends_the_handover_in_time() {
    if let Some((_, channel)) = as_program() {
        // Waits for the test to end it.
        let _ = line(&channel);
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let test = "a_program_that_never_asks_ends_the_handover_in_time";
    let mut program = this_test(test, "idle", &channel)
        .fd("web", &web)
        .unwrap()
        .timeout(Duration::from_millis(500))
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    let e = program.wait_handover().unwrap_err();
    assert!(
        e.to_string().contains("did not take its sockets within"),
        "{e}"
    );
    program.kill().unwrap();
    program.wait().unwrap();
    drop((told, web, channel, program));
    check.assert_unchanged();
}

#[test]
fn variables_of_the_handover_cannot_be_set_by_hand() {
    let check = NoLeak::start();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    for name in ["SYSTEMFD_SOCKET_SECRET", "listen_fds", "LISTEN_PID"] {
        let e = Command::new("cmd.exe")
            .env(name, "1")
            .fd("web", &web)
            .unwrap()
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
    }
    let e = Command::new("cmd.exe").fd("a:b", &web).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(web);
    check.assert_unchanged();
}

#[test]
fn a_program_using_listenfd_adopts_the_sockets_of_a_command() {
    if let Some((_, channel)) = as_program() {
        // listenfd's own request: no newline, the end of the stream.
        let mut fds = listenfd::ListenFd::from_env();
        let web = fds.take_tcp_listener(0).unwrap().unwrap();
        say(&channel, &format!("listenfd took {}", fds.len()));
        let (mut connection, _) = web.accept().unwrap();
        write!(connection, "hello from {}", std::process::id()).unwrap();
        return;
    }
    let check = NoLeak::start();
    let channel = side_channel();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let test = "a_program_using_listenfd_adopts_the_sockets_of_a_command";
    let mut program = this_test(test, "listenfd", &channel)
        .fd("web", &web)
        .unwrap()
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    program.wait_handover().unwrap();
    assert_eq!(line(&told), "listenfd took 1");
    let mut answer = String::new();
    let mut client = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("hello from {}", program.id()));
    assert!(program.wait().unwrap().success());
    drop((told, client, web, channel, program));
    check.assert_unchanged();
}

/// systemfd, built for Windows, where `IO_FDPASS_SYSTEMFD` says
/// (`.ci/cross windows` builds it and runs this test).
#[test]
#[ignore = "needs systemfd built for Windows, in IO_FDPASS_SYSTEMFD"]
fn a_program_adopts_the_sockets_systemfd_hands_it() {
    if let Some((_, channel)) = as_program() {
        let mut fds = take_and_tell(&channel).unwrap();
        let names = (0..fds.len())
            .map(|i| fds.name(i).unwrap())
            .collect::<Vec<_>>();
        let names = names.join(",");
        let web = fds.take_tcp_listener(0).unwrap();
        let udp = fds.take_udp_socket(1).unwrap();
        say(
            &channel,
            &format!(
                "took {names} {} {} {}",
                web.local_addr().unwrap(),
                udp.local_addr().unwrap(),
                std::process::id()
            ),
        );
        let (mut connection, _) = web.accept().unwrap();
        write!(connection, "hello from {}", std::process::id()).unwrap();
        return;
    }
    let systemfd = std::env::var_os("IO_FDPASS_SYSTEMFD")
        .expect("IO_FDPASS_SYSTEMFD names systemfd.exe built for Windows");
    let check = NoLeak::start();
    let channel = side_channel();
    let test = "a_program_adopts_the_sockets_systemfd_hands_it";
    let mut systemfd = StdCommand::new(systemfd)
        .args([
            "-q",
            "-s",
            "tcp::127.0.0.1:0",
            "-s",
            "udp::127.0.0.1:0",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--ignored",
        ])
        .env(ROLE, "systemfd")
        .env(PORT, channel.local_addr().unwrap().port().to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (told, _) = channel.accept().unwrap();
    let said = line(&told);
    let [took, names, web, _udp, pid] = said.split(' ').collect::<Vec<_>>()[..] else {
        panic!("the program says {said:?}")
    };
    // systemfd's protocol names no socket.
    assert_eq!((took, names), ("took", "unknown,unknown"), "{said}");
    let mut answer = String::new();
    let mut client = TcpStream::connect(web).unwrap();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("hello from {pid}"));
    assert!(systemfd.wait().unwrap().success());
    drop((told, client, channel, systemfd));
    check.assert_unchanged();
}
