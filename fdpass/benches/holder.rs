//! The holder, timed as a shell user meets it: whole processes.
//!
//! 1. One fd stored, fetched (running `true` with it) and dropped, round
//!    after round, with `fdpass hold` and its client commands, and with
//!    s6's fd holder (`s6-fdholderd` with `s6-fdholder-store`,
//!    `s6-fdholder-retrieve` and `s6-fdholder-delete`), the two taking
//!    turns so that both meet the same machine; and a bare `true` started
//!    the same way, the floor under both.
//! 2. `fdpass list` with no other client, and with 1,000 silent clients
//!    connected (`--client-timeout 60s`, so that they stay).
//!
//! `cargo bench -p fdpass --bench holder` (`-- --quick` for a few rounds;
//! `FDPASS_BENCH_BIN=PATH` times another build of fdpass). It prints
//! figures and asserts nothing.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use io_fdpass_test_support::TempDir;

/// The binary timed: this package's, or the one `FDPASS_BENCH_BIN` names
/// (a build with other flags, say).
static FDPASS: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
    std::env::var_os("FDPASS_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_fdpass").into(), PathBuf::from)
});

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    println!("timing {}", FDPASS.display());
    let dir = TempDir::new("bench-holder");
    let rounds = if quick { 20 } else { 200 };
    against_s6(&dir, rounds);
    silent_clients(&dir, if quick { 20 } else { 200 }, 1000);
}

/// Time taken: on the clock, and on the CPU by the process itself (user
/// and system), which a busy machine disturbs less.
#[derive(Clone, Copy, Default)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::AddAssign for Took {
    fn add_assign(&mut self, other: Took) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// The CPU time of the children waited for so far (`getrusage(2)`).
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is given.
    let usage = unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs `cmd` to the end, with stdin from `stdin`, and returns how long it
/// took; a failure stops the benchmark, whose figures would be wrong.
fn time(cmd: &mut Command, stdin: Option<&std::fs::File>) -> Took {
    cmd.stdout(Stdio::null());
    cmd.stdin(match stdin {
        Some(file) => Stdio::from(file.try_clone().unwrap()),
        None => Stdio::null(),
    });
    let cpu = children_cpu();
    let start = Instant::now();
    let status = cmd.status().expect("start the command");
    let wall = start.elapsed();
    assert!(status.success(), "{cmd:?}: {status}");
    Took {
        wall,
        cpu: children_cpu().saturating_sub(cpu),
    }
}

fn ms(total: Duration, rounds: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / rounds as f64
}

/// Where `program` is in PATH, if anywhere.
fn in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Waits until something accepts connections at `socket`.
fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops `child` with SIGTERM.
fn stop(mut child: Child) {
    let pid = rustix::process::Pid::from_child(&child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = child.wait();
}

fn against_s6(dir: &TempDir, rounds: usize) {
    println!("store, fetch (running true) and drop of one fd: {rounds} rounds, whole processes");
    let Some(binder) = in_path("s6-ipcserver-socketbinder") else {
        println!("  skipped: s6 is not installed (Debian: apt-get install s6)");
        return;
    };
    let s6 = |name: &str| binder.with_file_name(name);

    // s6-fdholderd as s6-fdholder-daemon starts it: bound by
    // s6-ipcserver-socketbinder, with rules that let this user store,
    // retrieve and delete any identifier.
    let rules = dir.join("rules");
    let uid = rustix::process::getuid().as_raw();
    let env = rules.join(format!("uid/{uid}/env"));
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(rules.join(format!("uid/{uid}/allow")), "").unwrap();
    for right in ["S6_FDHOLDER_STORE_REGEX", "S6_FDHOLDER_RETRIEVE_REGEX"] {
        std::fs::write(env.join(right), "^\n").unwrap();
    }
    let s6_sock = dir.join("s6.sock");
    let mut s6d = Command::new(&binder)
        .arg("--")
        .arg(&s6_sock)
        .arg(s6("s6-fdholderd"))
        .args(["-1", "-i"])
        .arg(&rules)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start s6-fdholderd");
    // -1: a newline once it accepts connections.
    let mut ready = String::new();
    BufReader::new(s6d.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();

    let fdpass_sock = dir.join("fdpass.sock");
    let hold = Command::new(&*FDPASS)
        .arg("hold")
        .arg(&fdpass_sock)
        .stdin(Stdio::null())
        .spawn()
        .expect("start fdpass hold");
    wait_for(&fdpass_sock);

    // The fd held: a listening socket, on stdin, which both can store.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::fs::File::from(std::os::fd::OwnedFd::from(listener));
    let (f, s) = (fdpass_sock.as_os_str(), s6_sock.as_os_str());
    let mut totals = [[Took::default(); 3]; 2];
    let mut bare = Took::default();
    let round = |totals: &mut [[Took; 3]; 2], bare: &mut Took| {
        totals[0][0] += time(
            Command::new(&*FDPASS)
                .arg("store")
                .arg(f)
                .args(["web", "0"]),
            Some(&held),
        );
        totals[1][0] += time(
            Command::new(s6("s6-fdholder-store")).arg(s).arg("web"),
            Some(&held),
        );
        totals[0][1] += time(
            Command::new(&*FDPASS)
                .arg("fetch")
                .arg(f)
                .args(["web", "--", "true"]),
            None,
        );
        totals[1][1] += time(
            Command::new(s6("s6-fdholder-retrieve"))
                .arg(s)
                .args(["web", "true"]),
            None,
        );
        totals[0][2] += time(Command::new(&*FDPASS).arg("drop").arg(f).arg("web"), None);
        totals[1][2] += time(
            Command::new(s6("s6-fdholder-delete")).arg(s).arg("web"),
            None,
        );
        *bare += time(&mut Command::new("true"), None);
    };
    // A few rounds to warm the caches, not counted.
    for _ in 0..5 {
        round(&mut [[Took::default(); 3]; 2], &mut Took::default());
    }
    for _ in 0..rounds {
        round(&mut totals, &mut bare);
    }
    stop(hold);
    stop(s6d);

    println!(
        "  {:<6} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>7}",
        "", "fdpass", "s6", "ratio", "fdpass cpu", "s6 cpu", "ratio"
    );
    let row = |op: &str, a: Took, b: Took| {
        let (aw, bw, ac, bc) = (
            ms(a.wall, rounds),
            ms(b.wall, rounds),
            ms(a.cpu, rounds),
            ms(b.cpu, rounds),
        );
        println!(
            "  {op:<6} {aw:>7.3} ms {bw:>7.3} ms {:>6.2}x   {ac:>7.3} ms {bc:>7.3} ms {:>6.2}x",
            aw / bw,
            ac / bc
        );
    };
    for (i, op) in ["store", "fetch", "drop"].iter().enumerate() {
        row(op, totals[0][i], totals[1][i]);
    }
    let sum = |ops: &[Took; 3]| {
        ops.iter().fold(Took::default(), |mut all, &op| {
            all += op;
            all
        })
    };
    row("round", sum(&totals[0]), sum(&totals[1]));
    println!(
        "  (a bare `true`, started the same way: {:.3} ms, {:.3} ms cpu)",
        ms(bare.wall, rounds),
        ms(bare.cpu, rounds)
    );
}

fn silent_clients(dir: &TempDir, rounds: usize, clients: usize) {
    println!("fdpass list: {rounds} runs, without and with {clients} silent clients connected");
    let sock = dir.join("silent.sock");
    let hold = Command::new(&*FDPASS)
        .arg("hold")
        .arg(&sock)
        .args(["--client-timeout", "60s"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start fdpass hold");
    wait_for(&sock);
    let data = std::fs::File::open(&*FDPASS).unwrap();
    time(
        Command::new(&*FDPASS)
            .arg("store")
            .arg(&sock)
            .args(["exe", "0"]),
        Some(&data),
    );
    let list = || time(Command::new(&*FDPASS).arg("list").arg(&sock), None).wall;
    let runs = |n| (0..n).map(|_| list()).sum::<Duration>();
    runs(5);
    let alone = runs(rounds);

    // Room for the clients' fds here; the holder raises its own limit.
    let nofile = rustix::process::Resource::Nofile;
    let mut limit = rustix::process::getrlimit(nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(nofile, limit);
    // Each client is taken in once the holder has greeted it.
    let silent: Vec<UnixStream> = (0..clients)
        .map(|_| {
            let client = UnixStream::connect(&sock).expect("connect a silent client");
            let mut greeting = [0; 12];
            (&client).read_exact(&mut greeting).unwrap();
            client
        })
        .collect();
    runs(5);
    let crowded = runs(rounds);
    drop(silent);
    stop(hold);

    let (a, b) = (ms(alone, rounds), ms(crowded, rounds));
    println!("  alone             {a:>7.3} ms");
    println!("  with {clients} silent {b:>7.3} ms  {:.2}x", b / a);
}
