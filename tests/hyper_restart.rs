//! `examples/hyper_restart.rs`, restarted five times by SIGHUP while
//! clients keep their connections and send request after request without
//! pause: no request fails, no connection is closed, and each connection
//! is answered by every generation in turn. A request left half sent
//! across a restart is answered whole by the next generation.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
/// after request without pause until `stop`, and noting what it sees in
/// `kept`.
fn clients(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    kept: &Arc<Mutex<Vec<Kept>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..CONNECTIONS)
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
        .collect()
}

/// Restarts the serving generation five times, each once every kept
/// connection has been answered by it, and waits for each old one to
/// exit; stops early if a connection ends. The last generation.
fn restart_five_times(kept: &Mutex<Vec<Kept>>, generations: &mut Generations) -> u32 {
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
        kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::HUP).unwrap();
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
        generations.0.push(next);
        util::wait_until(
            || seen_by_all(next),
            || format!("{:?}", kept.lock().unwrap()),
        );
        wait_for_exit(serving);
        serving = next;
    }
    serving
}

#[test]
fn kept_connections_move_through_five_restarts_without_a_close() {
    // Orphaned generations come to this process, which reaps them.
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let (first, addr, drain) = first_generation();
    let mut generations = Generations(vec![first.id()]);

    let stop = Arc::new(AtomicBool::new(false));
    let kept: Arc<Mutex<Vec<Kept>>> = Arc::new(Mutex::new(
        (0..CONNECTIONS).map(|_| Kept::default()).collect(),
    ));
    let clients = clients(addr, &stop, &kept);
    // A request sent in part before a restart, and finished after it.
    let mut half = connect(addr);
    let first_pid = get(&mut half).unwrap();
    half.get_mut().write_all(b"GET / HTTP/1.1\r\nHo").unwrap();

    assert_eq!(first_pid, first.id());
    let serving = restart_five_times(&kept, &mut generations);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    {
        let kept = kept.lock().unwrap();
        eprintln!("through 5 restarts: {kept:?}");
        for (i, k) in kept.iter().enumerate() {
            assert_eq!(k.ended, None, "connection {i} ended: {kept:?}");
        }
    }
    let half_answer = half
        .get_mut()
        .write_all(b"st: test\r\n\r\n")
        .map_err(|e| format!("send the rest: {e}"))
        .and_then(|()| answer(&mut half));
    drop(half);
    kill_process(Pid::from_raw(serving as i32).unwrap(), Signal::TERM).unwrap();
    wait_for_exit(serving);
    drop(first);
    drain.join().unwrap().unwrap();

    let kept = kept.lock().unwrap();
    for (i, k) in kept.iter().enumerate() {
        let pids: Vec<u32> = k.pids.iter().map(|&(pid, _)| pid).collect();
        assert_eq!(
            pids, generations.0,
            "connection {i} answered by each generation in turn"
        );
    }
    assert_eq!(
        half_answer,
        Ok(serving),
        "the request sent in part across the restarts is answered by the last generation"
    );
}
