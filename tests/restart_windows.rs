//! Restarting on Windows: `examples/restart.rs`, restarted five times by
//! the line `restart` on its standard input under a client that never
//! pauses: no request fails, and every generation serves. And each way a
//! restart fails ends the next generation and leaves no handle behind: it
//! exits first, is never ready, or says it is ready with a wrong secret;
//! a worker the next generation started ends with it, also when the next
//! generation is itself a restarted one (its job nested in its
//! predecessor's).

#![cfg(all(windows, feature = "tokio"))]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use io_fdpass::restart::Restart;
use io_fdpass_test_support::http::{self, Tally};
use io_fdpass_test_support::{wait_until, NoLeak, OpensFds};
use windows_sys::Win32::Foundation::CloseHandle;
use windows_sys::Win32::System::JobObjects::IsProcessInJob;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, TerminateProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    PROCESS_TERMINATE,
};

/// The example's binary, which `cargo test` builds beside the tests.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/restart.exe");
    assert!(
        path.exists(),
        "{} is missing: run the tests with --features tokio",
        path.display()
    );
    path
}

/// Whether process `pid` has ended (or never was).
fn gone(pid: u32) -> bool {
    // SAFETY: OpenProcess takes no pointers; the handle is closed below.
    let process = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
    if process.is_null() {
        return true;
    }
    // SAFETY: a live handle, waited on without blocking, then closed.
    unsafe {
        let ended = WaitForSingleObject(process, 0) == 0;
        CloseHandle(process);
        ended
    }
}

/// Ends process `pid`, a next generation that was ready, and waits for it.
fn end(pid: u32) {
    // SAFETY: OpenProcess takes no pointers; the handle is closed below.
    let process = unsafe { OpenProcess(PROCESS_TERMINATE | PROCESS_SYNCHRONIZE, 0, pid) };
    assert!(!process.is_null(), "{}", std::io::Error::last_os_error());
    // SAFETY: a live handle with the right to end the process; closed once.
    unsafe {
        TerminateProcess(process, 1);
        CloseHandle(process);
    }
    wait_for_exit(pid);
}

fn wait_for_exit(pid: u32) {
    wait_until(|| gone(pid), || format!("generation {pid} did not exit"));
}

/// What the client has seen: answers by pid, and every request counted.
#[derive(Default)]
struct Seen {
    by_pid: BTreeMap<u32, usize>,
    tally: Tally,
}

fn wait_for(seen: &Mutex<Seen>, what: &str, ready: impl Fn(&Seen) -> bool) {
    wait_until(
        || ready(&seen.lock().unwrap()),
        || {
            let seen = seen.lock().unwrap();
            format!("{what}: {}; by pid {:?}", seen.tally, seen.by_pid)
        },
    );
}

/// Starts `examples/restart.rs` on a free loopback port, with none of the
/// handover's variables: the process, its standard input, the address it
/// listens on, and the thread that reads the rest of what it writes, until
/// the last generation exits.
fn start_example() -> (Child, ChildStdin, SocketAddr, JoinHandle<io::Result<u64>>) {
    let mut first = Command::new(example());
    first
        .arg("127.0.0.1:0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for name in [
        "SYSTEMFD_SOCKET_SERVER",
        "SYSTEMFD_SOCKET_SECRET",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "NOTIFY_SOCKET_SECRET",
    ] {
        first.env_remove(name);
    }
    let mut first = first.spawn().unwrap();
    let stdin = first.stdin.take().unwrap();
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
    (first, stdin, addr, drain)
}

#[test]
fn five_restarts_under_load_fail_no_request() {
    // Counting handles, so that no other test counts meanwhile.
    let check = NoLeak::start();
    let (mut first, mut stdin, addr, drain) = start_example();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = http::get_pid(addr);
                let mut seen = seen.lock().unwrap();
                seen.tally.count(&answer);
                if let Ok(pid) = answer {
                    *seen.by_pid.entry(pid).or_default() += 1;
                }
            }
        })
    };

    let mut serving = first.id();
    wait_for(&seen, "the first generation never served", |seen| {
        seen.by_pid.contains_key(&serving)
    });
    for generation in 1..=5 {
        let before: Vec<u32> = seen.lock().unwrap().by_pid.keys().copied().collect();
        // Every generation shares this input; only the serving one reads,
        // since the one before it has exited.
        writeln!(stdin, "restart").unwrap();
        let new = |seen: &Seen| {
            seen.by_pid
                .keys()
                .copied()
                .find(|pid| !before.contains(pid))
        };
        wait_for(
            &seen,
            &format!("generation {generation} never served"),
            |seen| new(seen).is_some(),
        );
        let next = new(&seen.lock().unwrap()).unwrap();
        wait_for_exit(serving);
        serving = next;
    }
    let served = seen.lock().unwrap().by_pid[&serving];
    wait_for(&seen, "the last generation stopped serving", |seen| {
        seen.by_pid[&serving] > served + 10
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    writeln!(stdin, "stop").unwrap();
    drop(stdin);
    wait_for_exit(serving);
    first.wait().unwrap();
    drain.join().unwrap().unwrap();

    let seen = seen.lock().unwrap();
    eprintln!(
        "through 5 restarts: {}; by pid: {:?}",
        seen.tally, seen.by_pid
    );
    seen.tally.assert_none_failed();
    assert_eq!(
        seen.by_pid.len(),
        6,
        "every generation serves: {:?}",
        seen.by_pid
    );
    drop(first);
    check.assert_unchanged();
}

/// One restart at a time in this process: the tests that restart take it.
static SERIAL: Mutex<()> = Mutex::new(());

/// Where a next generation that is never ready writes its pid, if set.
const PID_FILE: &str = "IO_FDPASS_TEST_PID_FILE";

/// The role a re-run of this test binary plays as a next generation.
const ROLE: &str = "IO_FDPASS_TEST_ROLE";

/// A restart whose next generation is this test binary as `role`.
fn next_as(test: &str, role: &str, listener: &TcpListener) -> Restart {
    let args = [test, "--exact", "--nocapture", "--test-threads=1"];
    Restart::command(std::env::current_exe().unwrap(), args)
        .env(ROLE, role)
        .fd("http", listener)
        .unwrap()
}

/// In a next generation: its role.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The pid an error message names after "pid ".
fn pid_in(e: &std::io::Error) -> u32 {
    let text = e.to_string();
    let (_, after) = text
        .split_once("(pid ")
        .unwrap_or_else(|| panic!("no pid in {text}"));
    after.split(')').next().unwrap().parse().unwrap()
}

#[test]
fn each_failed_restart_ends_the_next_generation_and_leaves_nothing() {
    if let Some(role) = role() {
        let mut fds = io_fdpass::activation::ListenFds::take().unwrap();
        fds.take_tcp_listener(fds.index_of("http").unwrap())
            .unwrap();
        match role.as_str() {
            "silent-then-ready" => {
                // A connection that says nothing holds up the restart no
                // longer than the listener's bound on it.
                let address = std::env::var("NOTIFY_SOCKET").unwrap();
                let _silent =
                    std::net::TcpStream::connect(address.strip_prefix("tcp:").unwrap()).unwrap();
                assert!(io_fdpass::notify::ready().unwrap());
            }
            "spoof" => {
                std::env::set_var(
                    "NOTIFY_SOCKET_SECRET",
                    "59fb60fe-2634-4ec8-aa81-038793888c8e",
                );
                let e = io_fdpass::notify::ready().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
            }
            "exit" => std::process::exit(3),
            _ => {}
        }
        if let Some(path) = std::env::var_os(PID_FILE) {
            std::fs::write(path, std::process::id().to_string()).unwrap();
        }
        // Never ready: waits to be ended.
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let check = NoLeak::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let test = "each_failed_restart_ends_the_next_generation_and_leaves_nothing";

    let e = next_as(test, "exit", &listener).spawn().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("exited before it was ready"), "{e}");
    assert!(gone(pid_in(&e)));

    let e = next_as(test, "silent", &listener)
        .timeout(Duration::from_secs(2))
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(gone(pid_in(&e)), "{e}");

    let e = next_as(test, "spoof", &listener)
        .timeout(Duration::from_secs(3))
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("wrong secret"), "{e}");
    assert!(gone(pid_in(&e)), "{e}");

    let next = next_as(test, "silent-then-ready", &listener)
        .timeout(Duration::from_secs(60))
        .spawn()
        .unwrap();
    end(next.pid());

    // One restart at a time.
    let copy = listener.try_clone().unwrap();
    let slow = std::thread::spawn(move || {
        next_as(test, "silent", &copy)
            .timeout(Duration::from_secs(5))
            .spawn()
    });
    std::thread::sleep(Duration::from_millis(500));
    let busy = next_as(test, "silent", &listener)
        .timeout(Duration::from_secs(5))
        .spawn()
        .unwrap_err();
    let slow = slow.join().unwrap().unwrap_err();
    // The second one met the first under way, unless the first had not
    // begun yet: then it is the one that met the other.
    assert!(
        busy.kind() == ErrorKind::ResourceBusy || slow.kind() == ErrorKind::ResourceBusy,
        "{busy}; {slow}"
    );
    drop(listener);
    check.assert_unchanged();
}

#[test]
fn a_restart_future_dropped_ends_the_next_generation() {
    if role().is_some() {
        // The next generation's part is the test above's.
        return each_failed_restart_ends_the_next_generation_and_leaves_nothing();
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Counts nothing, but opens handles: kept clear of the other tests' counts.
    let _handles = OpensFds::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let pid_file = io_fdpass_test_support::temp_path("pid");
    let test = "a_restart_future_dropped_ends_the_next_generation";
    let restart = next_as(test, "silent", &listener)
        .env(PID_FILE, &pid_file)
        .timeout(Duration::from_secs(120))
        .spawn_async();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = async {
            while !pid_file.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            done = restart => panic!("the restart ended: {:?}", done.map(|next| next.pid())),
            () = started => {}
        }
    });
    // The file may be there before its text.
    let mut pid = None;
    wait_until(
        || {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.parse().ok());
            pid.is_some()
        },
        || "the next generation never wrote its pid".to_owned(),
    );
    wait_for_exit(pid.unwrap());
    drop(runtime);
    std::fs::remove_file(pid_file).unwrap();
}

/// Where a worker started by a next generation writes its pid.
const WORKER_PID_FILE: &str = "IO_FDPASS_TEST_WORKER_PID_FILE";

/// Where a next generation that restarts in turn says that its checks
/// passed.
const RESULT_FILE: &str = "IO_FDPASS_TEST_RESULT_FILE";

/// The pid written at `path`, once it is there whole.
fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// In a next generation: starts a worker, this test binary again as the
/// role `worker`, and returns once the worker has written its pid. The
/// worker is left to run.
#[expect(
    clippy::zombie_processes,
    reason = "the worker outlives this generation, whose failed restart ends it"
)]
fn start_worker(test: &str) {
    let path = PathBuf::from(std::env::var_os(WORKER_PID_FILE).unwrap());
    let _worker = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "worker")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        || read_pid(&path).is_some(),
        || "the worker never wrote its pid".to_owned(),
    );
}

/// Restarts into this test binary as `role`, a next generation that starts
/// a worker and then fails: the restart's error is of `kind`, and once it
/// has returned neither the next generation nor its worker runs.
fn assert_worker_ends_with_the_restart(
    test: &str,
    listener: &TcpListener,
    role: &str,
    timeout: Duration,
    kind: ErrorKind,
) {
    let pid_file = io_fdpass_test_support::temp_path("worker");
    let e = next_as(test, role, listener)
        .env(WORKER_PID_FILE, &pid_file)
        .timeout(timeout)
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    let worker = read_pid(&pid_file)
        .unwrap_or_else(|| panic!("the next generation started no worker before it failed: {e}"));
    std::fs::remove_file(&pid_file).unwrap();
    assert!(gone(pid_in(&e)), "{e}");
    if !gone(worker) {
        end(worker);
        panic!("the worker (pid {worker}) of the next generation outlived the failed restart: {e}");
    }
}

/// What a re-run of this test binary does as `role`.
fn play_worker_role(test: &str, role: &str) {
    if role == "worker" {
        let path = PathBuf::from(std::env::var_os(WORKER_PID_FILE).unwrap());
        let part = path.with_extension("part");
        std::fs::write(&part, std::process::id().to_string()).unwrap();
        std::fs::rename(&part, &path).unwrap();
        // Ends with the next generation's job, or never.
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let mut fds = io_fdpass::activation::ListenFds::take().unwrap();
    let listener = fds
        .take_tcp_listener(fds.index_of("http").unwrap())
        .unwrap();
    match role {
        "worker-then-exit" => {
            start_worker(test);
            std::process::exit(3);
        }
        "worker-then-silent" => {
            start_worker(test);
            std::thread::sleep(Duration::from_secs(600));
        }
        "ready-then-restart" => {
            assert!(io_fdpass::notify::ready().unwrap());
            // This generation runs in the job its predecessor started it
            // in: its own next generation's job nests in that one.
            let mut in_job = 0;
            // SAFETY: the pseudo-handle of this process, a null job (any
            // job) and a writable BOOL.
            let ok =
                unsafe { IsProcessInJob(GetCurrentProcess(), ptr::null_mut(), &raw mut in_job) };
            assert_ne!(ok, 0, "{}", std::io::Error::last_os_error());
            assert_ne!(in_job, 0, "the next generation runs in no job");
            let check = NoLeak::start();
            assert_worker_ends_with_the_restart(
                test,
                &listener,
                "worker-then-exit",
                Duration::from_secs(60),
                ErrorKind::Other,
            );
            check.assert_unchanged();
            let result = std::env::var_os(RESULT_FILE).unwrap();
            std::fs::write(result, "passed").unwrap();
        }
        _ => panic!("no such role: {role}"),
    }
}

#[test]
fn a_failed_restart_ends_the_workers_the_next_generation_started() {
    let test = "a_failed_restart_ends_the_workers_the_next_generation_started";
    if let Some(role) = role() {
        return play_worker_role(test, &role);
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let check = NoLeak::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();

    // It exits before it is ready.
    assert_worker_ends_with_the_restart(
        test,
        &listener,
        "worker-then-exit",
        Duration::from_secs(60),
        ErrorKind::Other,
    );
    // It is never ready.
    assert_worker_ends_with_the_restart(
        test,
        &listener,
        "worker-then-silent",
        Duration::from_secs(20),
        ErrorKind::TimedOut,
    );
    // A restarted generation restarts in turn, and that restart fails.
    let result = io_fdpass_test_support::temp_path("result");
    let next = next_as(test, "ready-then-restart", &listener)
        .env(RESULT_FILE, &result)
        .timeout(Duration::from_secs(60))
        .spawn()
        .unwrap();
    wait_for_exit(next.pid());
    let said = std::fs::read_to_string(&result)
        .unwrap_or_else(|e| panic!("the next generation's own restart failed its checks ({e})"));
    assert_eq!(said, "passed");
    std::fs::remove_file(&result).unwrap();
    drop(listener);
    check.assert_unchanged();
}
