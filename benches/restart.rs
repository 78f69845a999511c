//! Restarting an HTTP server under load, side by side: `io_fdpass::restart`,
//! `fdpass hold` with `fetch`, a naive rebind, an `SO_REUSEPORT` overlap,
//! `HAProxy`'s master-worker reload, nginx's binary upgrade, and two
//! controls, in one run on one machine: a server never restarted, and one
//! never restarted while at each restart the same server starts on another
//! port beside it (what starting a process costs the one serving, on this
//! machine, with nothing handed over).
//!
//! The load runs on 127.0.0.1 at a fixed request rate: with a new
//! connection per request, then with keep-alive connections reused without
//! pause. Every request is tried once and recorded: when it started, how
//! long it took, and its outcome (answered, or refused, reset, timed out,
//! cut short, a bad answer). Each mechanism gets the same number of
//! restarts, spaced apart, in rounds that take the mechanisms in turn, so
//! that the machine's bursts of noise fall on all of them alike.
//!
//! Per mechanism it prints the requests, the failures by kind, in
//! keep-alive mode the connections closed by the server and those that
//! moved to another process, how soon after the signal a new process
//! answered; then p50, p99 and max latency of the requests started in the
//! first 10 ms after a signal, in the second after it, and in steady state
//! (more than a second after any), the ratio of p99 after a restart to
//! steady, and how that ratio spread over the runs.
//!
//! Then, per mode, it searches for the highest rate that the server never
//! restarted sustains here (no failure, p99 under 5 ms, the load on
//! schedule), in short steps that double the rate, then bisect, and runs
//! the mechanisms again at that rate: a second table.
//!
//! `cargo bench --all-features --bench restart` (`-- --quick` for a short
//! run; `-- --help` for the other knobs). It builds the servers it runs
//! (`examples/restart.rs`, `examples/hyper_restart.rs` and `fdpass`) with
//! `cargo build --release` first. `HAProxy` and nginx come from the system
//! (`apt-get install haproxy nginx-light`); without them their rows say
//! so. It prints figures and asserts nothing.

#[cfg(all(target_os = "linux", feature = "tokio"))]
#[path = "restart/load.rs"]
mod load;
#[cfg(all(target_os = "linux", feature = "tokio"))]
#[path = "restart/mechanisms.rs"]
mod mechanisms;
#[cfg(all(target_os = "linux", feature = "tokio"))]
#[path = "restart/report.rs"]
mod report;
#[cfg(all(target_os = "linux", feature = "tokio"))]
#[path = "restart/search.rs"]
mod search;

#[cfg(all(target_os = "linux", feature = "tokio"))]
fn main() {
    linux::main();
}

#[cfg(not(all(target_os = "linux", feature = "tokio")))]
fn main() {
    eprintln!(
        "restart: the benchmark runs on Linux with the tokio feature \
         (cargo bench --all-features --bench restart)"
    );
}

#[cfg(all(target_os = "linux", feature = "tokio"))]
mod linux {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use io_fdpass_test_support::TempDir;

    use crate::load::{Load, Mode};
    use crate::mechanisms::{self, Kind, Programs};
    use crate::report::{self, Run, Step};
    use crate::search::Search;

    /// What to run.
    struct Options {
        rate: u32,
        connections: usize,
        restarts: usize,
        spacing: Duration,
        runs: usize,
        modes: Vec<Mode>,
        kinds: Vec<Kind>,
        max_rate: MaxRate,
        /// How long each step of the search loads the server.
        step: Duration,
        /// The most steps a search takes.
        steps: usize,
        /// The second table with io-fdpass's mechanisms and the controls
        /// only.
        quick: bool,
        /// Where each run's requests are written, one CSV file per run.
        records: Option<PathBuf>,
    }

    /// The rate of the second table.
    enum MaxRate {
        /// The highest that the server never restarted sustains, searched.
        Search,
        /// This one.
        Given(u32),
        /// No second table.
        Off,
    }

    /// The search stops once the rate it missed is within this fraction
    /// above the one it sustained.
    const PRECISION: f64 = 0.1;

    /// The steady time before the first restart.
    const LEAD: Duration = Duration::from_secs(1);

    const HELP: &str = "\
restart benchmark: cargo bench --all-features --bench restart -- [OPTIONS]
  --quick            1 run of 3 restarts 1.5 s apart, a search of 4 steps
                     of 1 s, and at the rate found io-fdpass's mechanisms
                     and the controls only (for CI)
  --rate N           requests a second (3000), and the search's first rate
  --max-rate N|off   the second table's rate, instead of the highest that
                     the server never restarted sustains; off: no second
                     table
  --step SECONDS     how long each step of that search lasts (3)
  --steps N          the most steps it takes (10)
  --connections N    keep-alive connections (64)
  --restarts N       restarts per run (10)
  --spacing SECONDS  between restarts (2)
  --runs N           runs of every mechanism (3)
  --mode close|keep-alive   one mode only
  --only NAME,...    these mechanisms only: restart, holder, naive,
                     reuseport, haproxy, nginx, control, alongside
  --records DIR      write each run's requests to DIR (made if missing),
                     one CSV file per run: when each started, how long
                     after the latest signal, how late, its latency and
                     its outcome";

    fn options() -> Options {
        let mut options = Options {
            rate: 3000,
            connections: 64,
            restarts: 10,
            spacing: Duration::from_secs(2),
            runs: 3,
            modes: Vec::new(),
            kinds: Kind::ALL.to_vec(),
            max_rate: MaxRate::Search,
            step: Duration::from_secs(3),
            steps: 10,
            quick: false,
            records: None,
        };
        let mut mode = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |what: &str| {
                args.next()
                    .unwrap_or_else(|| fail(&format!("{arg} needs {what}")))
            };
            match arg.as_str() {
                "--quick" => {
                    options.restarts = 3;
                    options.spacing = Duration::from_millis(1500);
                    options.runs = 1;
                    options.step = Duration::from_secs(1);
                    options.steps = 4;
                    options.quick = true;
                }
                "--rate" => options.rate = rate(&value("a rate")),
                "--max-rate" => {
                    options.max_rate = match value("a rate or off").as_str() {
                        "off" => MaxRate::Off,
                        given => MaxRate::Given(rate(given)),
                    };
                }
                "--step" => {
                    let seconds: f64 = number(&value("seconds"));
                    if seconds < 0.5 {
                        fail("--step: at least 0.5 s, so that it outlasts the first 250 ms, which count for failures only");
                    }
                    options.step = Duration::from_secs_f64(seconds);
                }
                "--steps" => options.steps = number(&value("a count")),
                "--connections" => options.connections = number(&value("a count")),
                "--restarts" => options.restarts = number(&value("a count")),
                "--runs" => options.runs = number(&value("a count")),
                "--spacing" => {
                    let seconds: f64 = number(&value("seconds"));
                    if seconds < 1.1 {
                        fail("--spacing: at least 1.1 s, so that the second after a restart ends before the next");
                    }
                    options.spacing = Duration::from_secs_f64(seconds);
                }
                "--mode" => mode = Some(value("close or keep-alive")),
                "--records" => options.records = Some(PathBuf::from(value("a directory"))),
                "--only" => {
                    let names = value("names");
                    options.kinds = names.split(',').map(kind_named).collect();
                }
                "--help" | "-h" => {
                    println!("{HELP}");
                    std::process::exit(0);
                }
                // cargo bench's own flag, and libtest's that it may pass.
                _ if arg.starts_with("--") => {}
                _ => fail(&format!("unknown argument {arg:?}")),
            }
        }
        let keep = Mode::KeepAlive(options.connections);
        options.modes = match mode.as_deref() {
            None => vec![Mode::Close, keep],
            Some("close") => vec![Mode::Close],
            Some("keep-alive") => vec![keep],
            Some(other) => fail(&format!("--mode {other:?}: close or keep-alive")),
        };
        options
    }

    fn fail(message: &str) -> ! {
        eprintln!("restart: {message}\n{HELP}");
        std::process::exit(64);
    }

    fn number<T: std::str::FromStr>(text: &str) -> T {
        text.parse()
            .unwrap_or_else(|_| fail(&format!("{text:?} is not a number")))
    }

    fn rate(text: &str) -> u32 {
        let rate = number(text);
        if rate == 0 {
            fail("a rate of 0 requests a second loads nothing");
        }
        rate
    }

    fn kind_named(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.option() == name)
            .unwrap_or_else(|| fail(&format!("no mechanism {name:?}")))
    }

    fn mode_name(mode: Mode) -> &'static str {
        match mode {
            Mode::Close => "close",
            Mode::KeepAlive(_) => "keep-alive",
        }
    }

    /// Builds the servers with cargo, as `cargo bench` built this program,
    /// and finds them beside it.
    fn programs() -> Programs {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--release",
                "--quiet",
                "--features",
                "io-fdpass/tokio",
            ])
            .args([
                "-p",
                "io-fdpass",
                "--example",
                "restart",
                "--example",
                "hyper_restart",
            ])
            .args(["-p", "fdpass", "--bin", "fdpass"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the servers: {status}");
        // This program is target/release/deps/restart-HASH.
        let exe = std::env::current_exe().expect("this program's path");
        let release: PathBuf = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/release")
            .to_owned();
        Programs {
            restart: release.join("examples/restart"),
            hyper: release.join("examples/hyper_restart"),
            fdpass: release.join("fdpass"),
        }
    }

    fn installed(program: &str) -> bool {
        Command::new(program)
            .arg("-v")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    pub fn main() {
        let options = options();
        // Every generation and daemon started comes back to this process
        // when its parent exits, to be reaped.
        // SAFETY: prctl with integer arguments only.
        let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        assert_eq!(set, 0, "PR_SET_CHILD_SUBREAPER");
        let programs = programs();
        let kinds: Vec<Kind> = options
            .kinds
            .iter()
            .copied()
            .filter(|kind| match kind.needs() {
                Some(program) if !installed(program) => {
                    println!("{}: {program} is not installed; left out", kind.name());
                    false
                }
                _ => true,
            })
            .collect();
        for &mode in &options.modes {
            let plan = Plan {
                rate: options.rate,
                restarts: options.restarts,
                spacing: options.spacing,
                lead: LEAD,
            };
            compare(mode, &plan, &kinds, &options, &programs, "");
            let (rate, why) = match options.max_rate {
                MaxRate::Off => continue,
                MaxRate::Given(rate) => (rate, "--max-rate"),
                MaxRate::Search => match search(mode, &options, &programs) {
                    Some(rate) => (rate, "the highest the server never restarted sustained"),
                    None => continue,
                },
            };
            let max_kinds: Vec<Kind> = kinds
                .iter()
                .copied()
                .filter(|kind| !options.quick || kind.is_ours() || kind.is_control())
                .collect();
            if max_kinds.is_empty() {
                continue;
            }
            compare(
                mode,
                &Plan { rate, ..plan },
                &max_kinds,
                &options,
                &programs,
                &format!(" ({why})"),
            );
        }
        println!(
            "\n\"serves after\": median time from the signal to the end of the first answer by a \
             process that had not answered in the second before it."
        );
    }

    /// One run's load and restarts: `rate` requests a second, `restarts`
    /// restarts `spacing` apart after `lead` of steady load, and the run
    /// ends `spacing` after the last (or at `lead` without restarts).
    #[derive(Clone, Copy)]
    struct Plan {
        rate: u32,
        restarts: usize,
        spacing: Duration,
        lead: Duration,
    }

    /// Every mechanism of `kinds` in `mode`, `options.runs` times by
    /// `plan`, and the table of what they showed, with the targets; `why`
    /// follows the rate in its title.
    fn compare(
        mode: Mode,
        plan: &Plan,
        kinds: &[Kind],
        options: &Options,
        programs: &Programs,
        why: &str,
    ) {
        let runs = options.runs;
        let mut results: Vec<(Kind, Vec<Run>)> =
            kinds.iter().map(|&kind| (kind, Vec::new())).collect();
        for round in 0..runs {
            // Each round in another order, so that none is always first
            // after the previous one's stop.
            let n = results.len();
            for i in 0..n {
                let (kind, runs_of_kind) = &mut results[(i + round) % n];
                let run = run_once(*kind, mode, plan, programs);
                eprintln!(
                    "{} requests/s, round {}/{runs} {}: {} requests, {} failed",
                    plan.rate,
                    round + 1,
                    kind.name(),
                    run.seen.records.len(),
                    failed(&run)
                );
                if let Some(dir) = &options.records {
                    let file = dir.join(format!(
                        "{}-{}-{}-{}.csv",
                        mode_name(mode),
                        plan.rate,
                        kind.option(),
                        round + 1
                    ));
                    if let Err(e) = report::write_records(&file, &run) {
                        fail(&format!("--records: cannot write {}: {e}", file.display()));
                    }
                }
                runs_of_kind.push(run);
            }
        }
        let title = match mode {
            Mode::Close => format!(
                "A new connection per request, {} requests/s{why}; {runs} run(s) of {} restarts {:?} apart",
                plan.rate, plan.restarts, plan.spacing
            ),
            Mode::KeepAlive(n) => format!(
                "{n} keep-alive connections, {} requests/s in all{why}; {runs} run(s) of {} restarts {:?} apart",
                plan.rate, plan.restarts, plan.spacing
            ),
        };
        let keep_alive = matches!(mode, Mode::KeepAlive(_));
        print!("{}", report::table(&title, keep_alive, &results));
        print!("\n{}", report::targets(keep_alive, &results));
        let failures = report::failures(&results);
        if !failures.is_empty() {
            print!("\nthe first failure of each kind:\n{failures}");
        }
    }

    fn failed(run: &Run) -> usize {
        run.seen
            .records
            .iter()
            .filter(|r| r.outcome.is_err())
            .count()
    }

    /// The highest rate that a server never restarted sustains in `mode`
    /// (`report::Step::sustained`), searched from `options.rate` in steps
    /// of `options.step`; prints the steps.
    fn search(mode: Mode, options: &Options, programs: &Programs) -> Option<u32> {
        let mut search = Search::new(options.rate, options.steps, PRECISION);
        let mut steps = Vec::new();
        while let Some(rate) = search.next() {
            let plan = Plan {
                rate,
                restarts: 0,
                spacing: Duration::ZERO,
                lead: options.step,
            };
            let step = Step::of(rate, &run_once(Kind::Control, mode, &plan, programs));
            eprintln!("search: {}", step.line().trim_start());
            search.record(rate, step.sustained());
            steps.push(step);
        }
        let what = match mode {
            Mode::Close => "a new connection per request".to_owned(),
            Mode::KeepAlive(n) => format!("{n} keep-alive connections"),
        };
        print!(
            "{}",
            report::search(
                &format!(
                    "The highest rate the server never restarted sustains, {what}: \
                     no failure, p99 under {:?}, requests late on the schedule under that at p99; \
                     steps of {:?}",
                    report::SUSTAINED_P99,
                    options.step
                ),
                &steps,
                search.found(),
                search.bounded()
            )
        );
        search.found()
    }

    /// One run of one mechanism by `plan`: start it, load it, restart it,
    /// stop it.
    fn run_once(kind: Kind, mode: Mode, plan: &Plan, programs: &Programs) -> Run {
        let dir = TempDir::new("bench-restart");
        let (mut server, addr) = match mechanisms::start(kind, mode, programs, dir.as_ref()) {
            Ok(started) => started,
            Err(e) => {
                return Run {
                    seen: crate::load::Seen::default(),
                    signals: Vec::new(),
                    restart_errors: vec![format!("it did not start: {e}")],
                }
            }
        };
        let t0 = Instant::now();
        let load = Load::start(addr, mode, plan.rate, t0);
        let mut signals = Vec::new();
        let mut restart_errors = Vec::new();
        for i in 0..plan.restarts {
            sleep_until(t0 + plan.lead + plan.spacing * i as u32);
            signals.push(t0.elapsed());
            if let Err(e) = server.restart() {
                restart_errors.push(e.to_string());
            }
            mechanisms::reap();
        }
        sleep_until(t0 + plan.lead + plan.spacing * plan.restarts as u32);
        let seen = load.finish();
        server.stop();
        mechanisms::reap();
        Run {
            seen,
            signals,
            restart_errors,
        }
    }

    fn sleep_until(at: Instant) {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
}
