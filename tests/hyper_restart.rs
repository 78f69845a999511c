//! `examples/hyper_restart.rs`, restarted five times while clients keep
//! their connections and send request after request without pause: by
//! SIGHUP (`io_fdpass::restart`), and under `fdpass hold`, each generation
//! started by `fdpass fetch` and the one before it stopped by SIGTERM. No
//! request fails, no connection is closed, and each connection is
//! answered by every generation in turn. A request left half sent across
//! the restarts is answered whole by the last generation. Under the
//! holder, a next generation that goes before the one serving is
//! forgotten, and the one after it takes the connections.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_fdpass::holder::Client;

use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};

/// How many connections the clients keep.
const CONNECTIONS: usize = 4;

/// What each kept connection has seen: the pids that answered it, in
/// order, with how many answers each; and the error that ended it, if
/// any (a close, a reset, a bad answer).
#[derive(Default, Debug)]
struct Kept {
    pids: Vec<(u32, usize)>,
    ended: Option<String>,
}

/// One GET on a kept connection: the pid that answered, or what went
/// wrong, closes included.
fn get(stream: &mut BufReader<TcpStream>) -> Result<u32, String> {
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    answer(stream)
}

/// Reads one answer: its head, then as many bytes of body as it says.
fn answer(stream: &mut BufReader<TcpStream>) -> Result<u32, String> {
    let mut length = None;
    let mut line = String::new();
    let mut status = None;
    loop {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if status.is_none() {
            status = Some(line.clone());
            if !line.starts_with("HTTP/1.1 200") {
                return Err(format!("not a 200: {line:?}"));
            }
        } else if line == "\r\n" {
            break;
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
                return Err("the answer closes the connection".into());
            }
        }
    }
    let length = length.ok_or("an answer without a length")?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read the body: {e}"))?;
    let body = String::from_utf8_lossy(&body);
    body.trim_end()
        .rsplit_once("served by pid ")
        .and_then(|(_, pid)| pid.parse().ok())
        .ok_or_else(|| format!("a body without a pid: {body:?}"))
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(util::http::REQUEST_TIMEOUT))
        .unwrap();
    BufReader::new(stream)
}

/// Waits for `pid`, a child or an orphan this process reaps, to exit.
fn wait_for_exit(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    util::wait_until(
        || waitpid(pid, WaitOptions::NOHANG).unwrap().is_some(),
        || format!("generation {pid:?} did not exit"),
    );
}

/// Kills every generation, each the leader of a process group of its own,
/// when the test ends, so that none is left behind by a failure.
struct Generations(Vec<u32>);

impl Drop for Generations {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = rustix::process::kill_process_group(
                Pid::from_raw(pid as i32).unwrap(),
                Signal::KILL,
            );
        }
        while waitpid(None, WaitOptions::NOHANG).is_ok_and(|reaped| reaped.is_some()) {}
    }
}

/// The first generation, in a process group of its own, started by no
/// one waiting for it: its child, its address, and the thread that reads
/// what the generations write.
fn first_generation() -> (
    std::process::Child,
    SocketAddr,
    std::thread::JoinHandle<std::io::Result<u64>>,
) {
    let mut first = Command::new(util::example("hyper_restart"));
    first
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    for name in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        first.env_remove(name);
    }
    let mut first = first.spawn().unwrap();
    let mut stdout = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not an address: {line:?}"))
        .parse()
        .unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (first, addr, drain)
}

/// The clients: one thread per kept connection, each sending request
/// after request without pause until told to stop, and noting what it
/// sees in `kept`.
struct Clients {
    stop: Arc<AtomicBool>,
    kept: Arc<Mutex<Vec<Kept>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(addr: SocketAddr) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let kept: Arc<Mutex<Vec<Kept>>> = Arc::new(Mutex::new(
            (0..CONNECTIONS).map(|_| Kept::default()).collect(),
        ));
        let threads = (0..CONNECTIONS)
            .map(|i| {
                let (stop, kept) = (stop.clone(), kept.clone());
                let mut stream = connect(addr);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = get(&mut stream);
                        let mut kept = kept.lock().unwrap();
                        let mine = &mut kept[i];
                        match answer {
                            Ok(pid) => match mine.pids.last_mut() {
                                Some((last, n)) if *last == pid => *n += 1,
                                _ => mine.pids.push((pid, 1)),
                            },
                            Err(e) => {
                                mine.ended = Some(e);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        Clients {
            stop,
            kept,
            threads,
        }
    }

    /// Stops them once their answers in hand are read: what they saw.
    fn stop(self) -> Arc<Mutex<Vec<Kept>>> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        eprintln!("what the clients saw: {:?}", self.kept.lock().unwrap());
        self.kept
    }
}

/// Restarts the serving generation five times with `restart` (given the
/// pid serving, and the generations to add the next to if it knows it),
/// each once every kept connection has been answered by it, and waits for
/// each old one to exit; stops early if a connection ends. The last
/// generation.
fn restart_five_times(
    kept: &Mutex<Vec<Kept>>,
    generations: &mut Generations,
    mut restart: impl FnMut(u32, &mut Generations),
) -> u32 {
    let seen_by_all = |pid: u32| {
        let kept = kept.lock().unwrap();
        kept.iter().all(|k| k.pids.iter().any(|&(p, _)| p == pid))
            || kept.iter().any(|k| k.ended.is_some())
    };
    let mut serving = generations.0[0];
    util::wait_until(
        || seen_by_all(serving),
        || format!("{:?}", kept.lock().unwrap()),
    );
    for generation in 1..=5 {
        let before: Vec<u32> = generations.0.clone();
        restart(serving, generations);
        // The next generation serves every kept connection.
        let mut next = None;
        util::wait_until(
            || {
                let kept = kept.lock().unwrap();
                next = kept[0]
                    .pids
                    .last()
                    .map(|&(pid, _)| pid)
                    .filter(|pid| !before.contains(pid));
                next.is_some() || kept.iter().any(|k| k.ended.is_some())
            },
            || {
                format!(
                    "generation {generation} never served: {:?}",
                    kept.lock().unwrap()
                )
            },
        );
        let Some(next) = next else { break };
        if !generations.0.contains(&next) {
            generations.0.push(next);
        }
        util::wait_until(
            || seen_by_all(next),
            || format!("{:?}", kept.lock().unwrap()),
        );
        wait_for_exit(serving);
        serving = next;
    }
    serving
}

/// What the clients saw, and what the half-sent request got: asserts that
/// no connection ended and that each was answered by `generations` in
/// turn, and the half-sent request by the last.
fn assert_kept(kept: &Mutex<Vec<Kept>>, generations: &[u32], half_answer: Result<u32, String>) {
    let kept = kept.lock().unwrap();
    for (i, k) in kept.iter().enumerate() {
        assert_eq!(k.ended, None, "connection {i} ended: {kept:?}");
    }
    for (i, k) in kept.iter().enumerate() {
        let pids: Vec<u32> = k.pids.iter().map(|&(pid, _)| pid).collect();
        assert_eq!(
            pids, generations,
            "connection {i} answered by each generation in turn"
        );
    }
    assert_eq!(
        half_answer,
        Ok(*generations.last().unwrap()),
        "the request sent in part across the restarts is answered by the last generation"
    );
}

/// Finishes the request `half` sent in part, and reads its answer.
fn finish_half(mut half: BufReader<TcpStream>) -> Result<u32, String> {
    half.get_mut()
        .write_all(b"st: test\r\n\r\n")
        .map_err(|e| format!("send the rest: {e}"))
        .and_then(|()| answer(&mut half))
}

/// A connection with a request sent in part, after one answered by `pid`.
fn half_sent(addr: SocketAddr, pid: u32) -> BufReader<TcpStream> {
    let mut half = connect(addr);
    assert_eq!(get(&mut half), Ok(pid));
    half.get_mut().write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    half
}

#[test]
fn kept_connections_move_through_five_restarts_without_a_close() {
    // One test at a time (each reaps every orphan that comes to this
    // process, which another's generations may be), and no fd left open.
    let check = util::NoLeak::start();
    // Orphaned generations come to this process, which reaps them.
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let (first, addr, drain) = first_generation();
    let mut generations = Generations(vec![first.id()]);

    let clients = Clients::start(addr);
    // A request sent in part before a restart, and finished after it.
    let half = half_sent(addr, first.id());

    let serving = restart_five_times(&clients.kept, &mut generations, |serving, _| {
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
    });
    let kept = clients.stop();
    let half_answer = finish_half(half);
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(serving);
    drop(first);
    drain.join().unwrap().unwrap();
    assert_kept(&kept, &generations.0, half_answer);
    check.assert_unchanged();
}

/// `fdpass hold` at a socket of its own, with a listener on 127.0.0.1
/// stored under `http`; killed when dropped.
struct Holder {
    process: std::process::Child,
    socket: std::path::PathBuf,
    addr: SocketAddr,
}

impl Holder {
    fn start() -> Holder {
        let socket = util::temp_path("hyper-holder");
        let process = Command::new(util::fdpass_binary())
            .arg("hold")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let holder = Holder {
            process,
            socket,
            addr: listener.local_addr().unwrap(),
        };
        Client::new(&holder.socket)
            .startup_grace(util::WAIT_TIMEOUT)
            .timeout(util::WAIT_TIMEOUT)
            .store("http", &listener)
            .unwrap();
        holder
    }

    /// A holder, and a first generation serving under it.
    fn start_serving() -> (Holder, Generations) {
        let holder = Holder::start();
        let first = holder.generation();
        (holder, Generations(vec![first]))
    }

    /// A generation started as its users start it, `fdpass fetch SOCKET
    /// http -- hyper_restart --holder SOCKET`, ready: its pid.
    fn generation(&self) -> u32 {
        let notify = io_fdpass::notify::Listener::new().unwrap();
        let mut command = Command::new(util::fdpass_binary());
        command
            .arg("fetch")
            .arg(&self.socket)
            .args(["http", "--"])
            .arg(util::example("hyper_restart"))
            .arg("--holder")
            .arg(&self.socket)
            .env("NOTIFY_SOCKET", notify.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            command.env_remove(name);
        }
        let pid = command.spawn().unwrap().id();
        util::wait_until(
            || {
                let exited = waitpid(
                    Some(Pid::from_raw(pid as i32).unwrap()),
                    WaitOptions::NOHANG,
                );
                assert!(
                    matches!(exited, Ok(None)),
                    "generation {pid} exited before it was ready: {exited:?}"
                );
                notify
                    .wait_ready(Some(Duration::from_millis(100)))
                    .unwrap()
                    .is_some()
            },
            || format!("generation {pid} not ready"),
        );
        pid
    }

    fn entries(&self) -> Vec<io_fdpass::holder::protocol::Entry> {
        Client::new(&self.socket).entries().unwrap()
    }

    fn names(&self) -> Vec<String> {
        Client::new(&self.socket).list().unwrap()
    }

    /// The pid whose exit drops the end of a handoff socket the holder
    /// holds, if it holds one: the generation that left it.
    fn handoff_of(&self) -> Option<u32> {
        self.entries()
            .iter()
            .find(|entry| entry.name == "handoff")
            .and_then(|entry| entry.until_exit)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
fn kept_connections_move_through_five_holder_restarts_without_a_close() {
    // One test at a time (each reaps every orphan that comes to this
    // process, which another's generations may be), and no fd left open.
    let check = util::NoLeak::start();
    let (holder, mut generations) = Holder::start_serving();
    let first = generations.0[0];
    // The first generation left its end of a handoff socket for the next.
    assert_eq!(holder.names(), ["handoff", "http"]);

    let clients = Clients::start(holder.addr);
    let half = half_sent(holder.addr, first);

    let serving = restart_five_times(&clients.kept, &mut generations, |serving, generations| {
        // The next generation ready, the one serving is told to go.
        generations.0.push(holder.generation());
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    });
    let kept = clients.stop();
    let half_answer = finish_half(half);
    // With no next generation, the last one stops as any server does.
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(serving);
    assert_kept(&kept, &generations.0, half_answer);
    // Each generation's end went with it: the holder holds the listener
    // alone.
    util::wait_until(
        || holder.names() == ["http"],
        || format!("the holder holds {:?}", holder.names()),
    );
    check.assert_unchanged();
}

#[test]
fn a_next_generation_that_goes_is_forgotten_and_the_one_after_takes_the_connections() {
    // One test at a time (each reaps every orphan that comes to this
    // process, which another's generations may be), and no fd left open.
    let check = util::NoLeak::start();
    let (holder, mut generations) = Holder::start_serving();
    let first = generations.0[0];
    let clients = Clients::start(holder.addr);
    let left_by_first = || holder.handoff_of() == Some(first);
    util::wait_until(left_by_first, || "the first generation left no end".into());

    // A peer that takes the end and says something else than hello: the
    // serving generation leaves a new end.
    let taken = Client::new(&holder.socket).take("handoff").unwrap();
    let mut taken = std::os::unix::net::UnixStream::from(taken);
    taken.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    util::wait_until(left_by_first, || {
        format!(
            "no new end after a peer that is no generation: {:?}",
            holder.names()
        )
    });
    drop(taken);

    // One that takes the end and goes before its hello: a new end too.
    drop(Client::new(&holder.socket).take("handoff").unwrap());
    util::wait_until(left_by_first, || {
        format!(
            "no new end after a peer that went before its hello: {:?}",
            holder.names()
        )
    });

    // A next generation that said hello, killed, and one stopped before
    // the generation it said hello to: each forgotten, and a new end left
    // for the one after. The one stopped exits (it waits for no
    // connection from a generation that is not handing any over).
    for signal in [Signal::KILL, Signal::TERM] {
        let gone = holder.generation();
        generations.0.push(gone);
        assert_eq!(holder.handoff_of(), Some(gone));
        rustix::process::kill_process_group(Pid::from_raw(gone as i32).unwrap(), signal).unwrap();
        wait_for_exit(gone);
        util::wait_until(left_by_first, || {
            format!(
                "no new end after the next generation went ({signal:?}): {:?}",
                holder.entries()
            )
        });
    }

    // The one after takes every connection when the first is stopped.
    let next = holder.generation();
    generations.0.push(next);
    kill_process(Pid::from_raw(first as i32).unwrap(), Signal::TERM).unwrap();
    let answered_by = |pid: u32| {
        let kept = clients.kept.lock().unwrap();
        kept.iter()
            .all(|k| k.pids.last().is_some_and(|&(p, _)| p == pid))
            || kept.iter().any(|k| k.ended.is_some())
    };
    util::wait_until(
        || answered_by(next),
        || format!("{:?}", clients.kept.lock().unwrap()),
    );
    wait_for_exit(first);
    let kept = clients.stop();
    let kept = kept.lock().unwrap();
    for (i, k) in kept.iter().enumerate() {
        assert_eq!(k.ended, None, "connection {i} ended: {kept:?}");
        let pids: Vec<u32> = k.pids.iter().map(|&(pid, _)| pid).collect();
        assert_eq!(pids, [first, next], "connection {i}: {kept:?}");
    }
    kill_process(Pid::from_raw(next as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(next);
    drop(kept);
    check.assert_unchanged();
}

#[test]
fn a_next_generation_that_never_acknowledges_still_gets_every_connection() {
    // One test at a time (each reaps every orphan that comes to this
    // process, which another's generations may be), and no fd left open.
    let check = util::NoLeak::start();
    let (holder, generations) = Holder::start_serving();
    let first = generations.0[0];
    // More connections than the hand-over lets go at once without an
    // acknowledgement, each answered once by the first generation.
    let mut clients: Vec<BufReader<TcpStream>> = (0..12).map(|_| connect(holder.addr)).collect();
    for client in &mut clients {
        assert_eq!(get(client), Ok(first));
    }
    let addrs: Vec<SocketAddr> = clients
        .iter()
        .map(|c| c.get_ref().local_addr().unwrap())
        .collect();

    // A next generation that says hello and then only receives.
    util::wait_until(
        || holder.handoff_of() == Some(first),
        || "the first generation left no end".into(),
    );
    let taken = Client::new(&holder.socket).take("handoff").unwrap();
    let next = std::os::unix::net::UnixStream::from(taken);
    (&next).write_all(b"H").unwrap();
    next.set_read_timeout(Some(util::WAIT_TIMEOUT)).unwrap();
    // Told to stop, the first generation hears the hello and hands every
    // connection over, the acknowledgements never coming.
    kill_process(Pid::from_raw(first as i32).unwrap(), Signal::TERM).unwrap();
    let mut moved = Vec::new();
    loop {
        let mut header = [0u8; 4];
        let mut fds = [None];
        let got = io_fdpass::recv_fds(&next, &mut header, &mut fds).unwrap();
        if got.bytes == 0 && got.fds_received == 0 {
            break; // every connection sent: the first generation is gone
        }
        (&next).read_exact(&mut header[got.bytes..]).unwrap();
        let mut pending = vec![0; u32::from_le_bytes(header) as usize];
        (&next).read_exact(&mut pending).unwrap();
        let stream = TcpStream::from(fds[0].take().expect("a connection's fd"));
        moved.push(stream.peer_addr().unwrap());
    }
    wait_for_exit(first);
    moved.sort();
    let mut expected = addrs.clone();
    expected.sort();
    assert_eq!(moved, expected, "the connections that came");
    drop((next, clients));
    check.assert_unchanged();
}
