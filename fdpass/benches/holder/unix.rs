//! The holder's benchmark on Unix, where the holder and s6 run.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use io_fdpass_test_support::TempDir;

/// A build of fdpass to time, and what the figures call it.
struct Build {
    label: String,
    path: PathBuf,
}

/// The builds timed: first this package's (or `FDPASS_BENCH_BIN`'s), then
/// those of `FDPASS_BENCH_ALSO`.
fn builds() -> Vec<Build> {
    let first = match std::env::var_os("FDPASS_BENCH_BIN") {
        Some(path) => Build {
            label: "given".into(),
            path: path.into(),
        },
        None => Build {
            label: "default".into(),
            path: env!("CARGO_BIN_EXE_fdpass").into(),
        },
    };
    let also = std::env::var("FDPASS_BENCH_ALSO").unwrap_or_default();
    let others = also.split(',').filter(|item| !item.is_empty()).map(|item| {
        let (label, path) = item
            .split_once('=')
            .expect("FDPASS_BENCH_ALSO is a list of LABEL=PATH");
        Build {
            label: label.into(),
            path: path.into(),
        }
    });
    std::iter::once(first).chain(others).collect()
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, count, socket] = &args[..] {
        if flag == "--silent-clients" {
            return connect_silent(count.parse().unwrap(), Path::new(socket));
        }
    }
    let quick = std::env::args().any(|arg| arg == "--quick");
    let dir = TempDir::new("bench-holder");
    // Each build is timed from a copy of its own, as `cargo install`
    // copies the binary into ~/.cargo/bin: started from where the linker
    // just wrote it, the same binary took up to 3% longer a round, which
    // would tell builds apart by where they lie.
    let builds: Vec<Build> = builds()
        .into_iter()
        .enumerate()
        .map(|(i, build)| {
            println!("timing {}: {}", build.label, build.path.display());
            let copy = dir.join(&format!("fdpass-{i}"));
            std::fs::copy(&build.path, &copy).expect("copy the build timed");
            Build {
                path: copy,
                ..build
            }
        })
        .collect();
    let rounds = if quick { 20 } else { 200 };
    against_s6(&dir, &builds, rounds);
    silent_clients(&dir, &builds[0].path, if quick { 20 } else { 200 }, 1000);
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

/// The first line `child` writes on its (piped) stdout: how a process
/// here says it is ready.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// Stops `child` with SIGTERM.
fn stop(mut child: Child) {
    let pid = rustix::process::Pid::from_child(&child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = child.wait();
}

fn against_s6(dir: &TempDir, builds: &[Build], rounds: usize) {
    println!("store, fetch (running true) and drop of one fd: {rounds} rounds, whole processes");
    let Some(binder) = in_path("s6-ipcserver-socketbinder") else {
        println!("  skipped: s6 is not installed (Debian: apt-get install s6)");
        return;
    };
    let s6 = |name: &str| binder.with_file_name(name);

    let (s6d, s6_sock) = start_s6(dir, &binder);
    let holders = start_holders(dir, builds);

    // The fd held: a listening socket, on stdin, which both can store.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::fs::File::from(std::os::fd::OwnedFd::from(listener));
    let s = s6_sock.as_os_str();
    // Per operation (store, fetch, drop) and tool (the builds, then s6).
    let tools = builds.len() + 1;
    let mut totals: [Vec<Took>; 3] = std::array::from_fn(|_| vec![Took::default(); tools]);
    let mut bare = Took::default();
    // One operation's command, for a build's holder and for s6's.
    let fdpass_op = |op: usize, build: &Build, sock: &Path| {
        let mut cmd = Command::new(&build.path);
        match op {
            0 => cmd.arg("store").arg(sock).args(["web", "0"]),
            1 => cmd.arg("fetch").arg(sock).args(["web", "--", "true"]),
            _ => cmd.arg("drop").arg(sock).arg("web"),
        };
        cmd
    };
    let s6_op = |op: usize| {
        let name = [
            "s6-fdholder-store",
            "s6-fdholder-retrieve",
            "s6-fdholder-delete",
        ][op];
        let mut cmd = Command::new(s6(name));
        cmd.arg(s).arg("web");
        if op == 1 {
            cmd.arg("true");
        }
        cmd
    };
    // Each round starts with the next tool, so that none always runs
    // right after another's command (or first).
    let round = |start: usize, totals: &mut [Vec<Took>; 3], bare: &mut Took| {
        for (op, per_tool) in totals.iter_mut().enumerate() {
            let stdin = (op == 0).then_some(&held);
            for tool in (start..tools).chain(0..start) {
                let mut cmd = match holders.get(tool) {
                    Some((_, sock)) => fdpass_op(op, &builds[tool], sock),
                    None => s6_op(op),
                };
                per_tool[tool] += time(&mut cmd, stdin);
            }
        }
        *bare += time(&mut Command::new("true"), None);
    };
    // A few rounds to warm the caches, not counted.
    let mut warm_up: [Vec<Took>; 3] = std::array::from_fn(|_| vec![Took::default(); tools]);
    for start in 0..tools.max(5) {
        round(start % tools, &mut warm_up, &mut Took::default());
    }
    for i in 0..rounds {
        round(i % tools, &mut totals, &mut bare);
    }
    for (hold, _) in holders {
        stop(hold);
    }
    stop(s6d);

    print_table(builds, &totals, bare, rounds);
}

/// s6-fdholderd as s6-fdholder-daemon starts it: bound by
/// s6-ipcserver-socketbinder, with rules that let this user store,
/// retrieve and delete any identifier. Returns it and its socket.
fn start_s6(dir: &TempDir, binder: &Path) -> (Child, PathBuf) {
    let rules = dir.join("rules");
    let uid = rustix::process::getuid().as_raw();
    let env = rules.join(format!("uid/{uid}/env"));
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(rules.join(format!("uid/{uid}/allow")), "").unwrap();
    for right in ["S6_FDHOLDER_STORE_REGEX", "S6_FDHOLDER_RETRIEVE_REGEX"] {
        std::fs::write(env.join(right), "^\n").unwrap();
    }
    let s6_sock = dir.join("s6.sock");
    let mut s6d = Command::new(binder)
        .arg("--")
        .arg(&s6_sock)
        .arg(binder.with_file_name("s6-fdholderd"))
        .args(["-1", "-i"])
        .arg(&rules)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start s6-fdholderd");
    // -1: a newline once it accepts connections.
    assert_eq!(first_line(&mut s6d), "\n", "s6-fdholderd did not start");

    (s6d, s6_sock)
}

/// A holder of each build's own, so that each build's figures are its
/// processes alone; each with its socket.
fn start_holders(dir: &TempDir, builds: &[Build]) -> Vec<(Child, PathBuf)> {
    builds
        .iter()
        .enumerate()
        .map(|(i, build)| {
            let sock = dir.join(&format!("fdpass-{i}.sock"));
            let hold = Command::new(&build.path)
                .arg("hold")
                .arg(&sock)
                .stdin(Stdio::null())
                .spawn()
                .expect("start fdpass hold");
            wait_for(&sock);
            (hold, sock)
        })
        .collect()
}

/// The figures: per operation and round, each build against s6, on the
/// clock and in CPU time, and the bare `true` beside them.
fn print_table(builds: &[Build], totals: &[Vec<Took>; 3], bare: Took, rounds: usize) {
    println!(
        "  {:<6} {:<8} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>7}",
        "", "build", "fdpass", "s6", "ratio", "fdpass cpu", "s6 cpu", "ratio"
    );
    let row = |op: &str, label: &str, a: Took, b: Took| {
        let (aw, bw, ac, bc) = (
            ms(a.wall, rounds),
            ms(b.wall, rounds),
            ms(a.cpu, rounds),
            ms(b.cpu, rounds),
        );
        println!(
            "  {op:<6} {label:<8} {aw:>7.3} ms {bw:>7.3} ms {:>6.2}x   {ac:>7.3} ms {bc:>7.3} ms {:>6.2}x",
            aw / bw,
            ac / bc
        );
    };
    let ops = ["store", "fetch", "drop"];
    for (op, per_tool) in ops.iter().zip(totals) {
        for (build, &took) in builds.iter().zip(per_tool) {
            row(op, &build.label, took, per_tool[builds.len()]);
        }
    }
    let round_of = |tool: usize| {
        totals.iter().fold(Took::default(), |mut all, per_tool| {
            all += per_tool[tool];
            all
        })
    };
    let s6_round = round_of(builds.len());
    for (i, build) in builds.iter().enumerate() {
        row("round", &build.label, round_of(i), s6_round);
    }
    let first = round_of(0);
    println!(
        "  {} build against s6, per round: {:.2}x on the clock, {:.2}x cpu",
        builds[0].label,
        first.wall.as_secs_f64() / s6_round.wall.as_secs_f64(),
        first.cpu.as_secs_f64() / s6_round.cpu.as_secs_f64()
    );
    println!(
        "  (a bare `true`, started the same way: {:.3} ms, {:.3} ms cpu)",
        ms(bare.wall, rounds),
        ms(bare.cpu, rounds)
    );
}

fn silent_clients(dir: &TempDir, fdpass: &Path, rounds: usize, clients: usize) {
    println!("fdpass list: {rounds} runs, without and with {clients} silent clients connected");
    // Two holders holding the same, one of them with the clients; the
    // lists of the two take turns, so that both meet the same machine.
    let data = std::fs::File::open(fdpass).unwrap();
    let holder = |name: &str| {
        let sock = dir.join(name);
        let hold = Command::new(fdpass)
            .arg("hold")
            .arg(&sock)
            .args(["--client-timeout", "60s"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start fdpass hold");
        wait_for(&sock);
        time(
            Command::new(fdpass)
                .arg("store")
                .arg(&sock)
                .args(["exe", "0"]),
            Some(&data),
        );
        (hold, sock)
    };
    let (quiet, quiet_sock) = holder("quiet.sock");
    let (busy, busy_sock) = holder("busy.sock");

    // The clients live in a process of their own, this benchmark run
    // again: in this one, their fds would be in the fd table that every
    // `fdpass list` started from here copies and closes.
    let mut crowd = Command::new(std::env::current_exe().unwrap())
        .arg("--silent-clients")
        .arg(clients.to_string())
        .arg(&busy_sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the silent clients");
    assert_eq!(
        first_line(&mut crowd),
        "connected\n",
        "the silent clients did not connect"
    );

    let list = |sock: &Path| time(Command::new(fdpass).arg("list").arg(sock), None).wall;
    let (mut alone, mut crowded) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds + 5 {
        let (a, b) = (list(&quiet_sock), list(&busy_sock));
        if round >= 5 {
            alone += a;
            crowded += b;
        }
    }
    drop(crowd.stdin.take());
    let _ = crowd.wait();
    stop(quiet);
    stop(busy);

    let (a, b) = (ms(alone, rounds), ms(crowded, rounds));
    println!("  alone             {a:>7.3} ms");
    println!("  with {clients} silent {b:>7.3} ms  {:.2}x", b / a);
}

/// The silent clients' process: connects `count` clients to the holder at
/// `socket`, each taken in once the holder has greeted it, says so on
/// stdout, and keeps them until stdin closes.
fn connect_silent(count: usize, socket: &Path) {
    // Room for the clients' fds; the holder raises its own limit.
    let nofile = rustix::process::Resource::Nofile;
    let mut limit = rustix::process::getrlimit(nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(nofile, limit);
    let silent: Vec<UnixStream> = (0..count)
        .map(|_| {
            let client = UnixStream::connect(socket).expect("connect a silent client");
            let mut greeting = [0; 12];
            (&client).read_exact(&mut greeting).unwrap();
            client
        })
        .collect();
    println!("connected");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(silent);
}
