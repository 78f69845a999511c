//! The figures: each request sorted by when it started relative to the
//! restarts, and the tables.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use io_fdpass_test_support::http::FailureKind;

use crate::load::{Record, Seen};
use crate::mechanisms::Kind;

/// Requests that start this soon after the load begins are left out of the
/// latencies (their connections are new); their outcomes count.
const WARM: Duration = Duration::from_millis(250);
/// The first window after a signal.
const FIRST: Duration = Duration::from_millis(10);
/// The second window after a signal, which includes the first.
const SECOND: Duration = Duration::from_secs(1);

const KINDS: [FailureKind; 6] = [
    FailureKind::Refused,
    FailureKind::Reset,
    FailureKind::TimedOut,
    FailureKind::Empty,
    FailureKind::Bad,
    FailureKind::Other,
];

/// One run of one mechanism: what the load saw, when each restart was
/// signalled, and the restarts that failed.
pub struct Run {
    pub seen: Seen,
    pub signals: Vec<Duration>,
    pub restart_errors: Vec<String>,
}

/// Latencies of the answered requests, by window.
#[derive(Default)]
struct Windows {
    first: Vec<Duration>,
    second: Vec<Duration>,
    steady: Vec<Duration>,
}

impl Windows {
    fn of(run: &Run) -> Windows {
        let mut windows = Windows::default();
        for record in &run.seen.records {
            if record.outcome.is_err() || record.start < WARM {
                continue;
            }
            match since_signal(&run.signals, record.start) {
                Some(d) if d < FIRST => {
                    windows.first.push(record.latency);
                    windows.second.push(record.latency);
                }
                Some(d) if d < SECOND => windows.second.push(record.latency),
                _ => windows.steady.push(record.latency),
            }
        }
        windows.first.sort();
        windows.second.sort();
        windows.steady.sort();
        windows
    }

    fn extend(&mut self, other: Windows) {
        self.first.extend(other.first);
        self.second.extend(other.second);
        self.steady.extend(other.steady);
        self.first.sort();
        self.second.sort();
        self.steady.sort();
    }
}

/// How long after the latest signal at or before `at` a request started.
fn since_signal(signals: &[Duration], at: Duration) -> Option<Duration> {
    signals
        .iter()
        .rev()
        .find(|&&s| s <= at)
        .map(|&s| at.saturating_sub(s))
}

/// Writes every request of `run` to `path` as CSV, created with its
/// directory: its start since the load began, how long after the latest
/// signal it started (empty before the first), how late it started
/// ([`Record::late`]) and its latency, all in ms, and the pid that answered
/// or the kind of failure.
pub fn write_records(path: &std::path::Path, run: &Run) -> std::io::Result<()> {
    let mut text = String::from("start_ms,since_signal_ms,late_ms,latency_ms,outcome\n");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for record in &run.seen.records {
        let since = since_signal(&run.signals, record.start)
            .map_or(String::new(), |d| format!("{:.3}", ms(d)));
        let outcome = match record.outcome {
            Ok(pid) => pid.to_string(),
            Err(kind) => kind.to_string(),
        };
        let _ = writeln!(
            text,
            "{:.3},{since},{:.3},{:.3},{outcome}",
            ms(record.start),
            ms(record.late),
            ms(record.latency)
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// The `q` quantile of sorted latencies (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => Some(a.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    }
}

fn show_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// For each restart, how long after its signal a process that had not
/// answered in the second before it first answered (the end of that
/// answer).
fn handovers(run: &Run) -> Vec<Duration> {
    let mut found = Vec::new();
    for (i, &signal) in run.signals.iter().enumerate() {
        let until = run.signals.get(i + 1).copied().unwrap_or(Duration::MAX);
        let before: BTreeSet<u32> = answered(&run.seen.records)
            .filter(|(r, _)| r.start < signal && r.start + SECOND >= signal)
            .map(|(_, pid)| pid)
            .collect();
        let first_new = answered(&run.seen.records)
            .filter(|(r, pid)| r.start >= signal && r.start < until && !before.contains(pid))
            .map(|(r, _)| (r.start + r.latency).saturating_sub(signal))
            .min();
        found.extend(first_new);
    }
    found
}

fn answered(records: &[Record]) -> impl Iterator<Item = (&Record, u32)> {
    records
        .iter()
        .filter_map(|r| r.outcome.ok().map(|pid| (r, pid)))
}

/// The table of one mode: every mechanism's runs.
pub fn table(title: &str, keep_alive: bool, results: &[(Kind, Vec<Run>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{title}");
    let _ = write!(
        out,
        "\n{:<20} {:>8} {:>7} {:>7} {:>5} {:>7} {:>5} {:>4} {:>5}",
        "mechanism", "requests", "failed", "refused", "reset", "timeout", "empty", "bad", "other"
    );
    if keep_alive {
        let _ = write!(out, " {:>7} {:>6}", "closed", "moved");
    }
    let _ = writeln!(out, " {:>13} {:>14}", "failed/run", "serves after");
    for (kind, runs) in results {
        let mut failed_by = [0usize; KINDS.len()];
        let mut requests = 0;
        let (mut closed, mut moved) = (0, 0);
        let mut per_run = Vec::new();
        let mut serves = Vec::new();
        let mut restart_errors = 0;
        for run in runs {
            requests += run.seen.records.len();
            let mut failed = 0;
            for record in &run.seen.records {
                if let Err(kind) = record.outcome {
                    let i = KINDS.iter().position(|k| *k == kind).expect("a kind");
                    failed_by[i] += 1;
                    failed += 1;
                }
            }
            per_run.push(failed);
            closed += run.seen.closed_by_server;
            moved += run.seen.moved;
            serves.extend(handovers(run));
            restart_errors += run.restart_errors.len();
        }
        serves.sort();
        let failed: usize = failed_by.iter().sum();
        let spread = match (per_run.iter().min(), per_run.iter().max()) {
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            _ => "-".into(),
        };
        let mut name = kind.name().to_owned();
        if restart_errors > 0 {
            name = format!("{name} ({restart_errors} restarts failed)");
        }
        let _ = write!(
            out,
            "{name:<20} {requests:>8} {failed:>7} {:>7} {:>5} {:>7} {:>5} {:>4} {:>5}",
            failed_by[0], failed_by[1], failed_by[2], failed_by[3], failed_by[4], failed_by[5]
        );
        if keep_alive {
            let _ = write!(out, " {closed:>7} {moved:>6}");
        }
        let serves_after = match quantile(&serves, 0.5) {
            Some(median) if !kind.is_control() => format!("{} ms", ms(Some(median))),
            _ => "-".into(),
        };
        let _ = writeln!(out, " {spread:>13} {serves_after:>14}");
    }

    out.push_str(&latencies(results));
    out
}

/// The latencies of one mode, by window, and their ratios to steady
/// state.
fn latencies(results: &[(Kind, Vec<Run>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<20} {:>20} {:>20} {:>20} {:>9} {:>9} {:>13}",
        "latency, ms",
        "first 10 ms p50/p99/max",
        "second after",
        "steady",
        "p99 10ms",
        "p99 1 s",
        "1 s, per run"
    );
    let _ = writeln!(
        out,
        "{:<20} {:>20} {:>20} {:>20} {:>9} {:>9} {:>13}",
        "", "", "", "", "/steady", "/steady", "min–max"
    );
    for (kind, runs) in results {
        let mut all = Windows::default();
        let mut per_run = Vec::new();
        for run in runs {
            let windows = Windows::of(run);
            if let Some(r) = ratio(
                quantile(&windows.second, 0.99),
                quantile(&windows.steady, 0.99),
            ) {
                per_run.push(r);
            }
            all.extend(windows);
        }
        let three = |sorted: &[Duration]| {
            format!(
                "{}/{}/{}",
                ms(quantile(sorted, 0.5)),
                ms(quantile(sorted, 0.99)),
                ms(sorted.last().copied())
            )
        };
        let steady99 = quantile(&all.steady, 0.99);
        let spread = if per_run.is_empty() {
            "-".into()
        } else {
            let lo = per_run.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_run.iter().copied().fold(0.0, f64::max);
            format!("{lo:.2}–{hi:.2}")
        };
        let _ = writeln!(
            out,
            "{:<20} {:>20} {:>20} {:>20} {:>9} {:>9} {:>13}",
            kind.name(),
            three(&all.first),
            three(&all.second),
            three(&all.steady),
            show_ratio(ratio(quantile(&all.first, 0.99), steady99)),
            show_ratio(ratio(quantile(&all.second, 0.99), steady99)),
            spread
        );
    }
    out
}

/// The first failure of each kind that each mechanism met, to tell what
/// happened.
pub fn failures(results: &[(Kind, Vec<Run>)]) -> String {
    let mut out = String::new();
    for (kind, runs) in results {
        let mut shown: Vec<FailureKind> = Vec::new();
        for run in runs {
            for failure in &run.seen.first_failures {
                if !shown.contains(&failure.kind) {
                    shown.push(failure.kind);
                    let _ = writeln!(out, "  {}: {failure}", kind.name());
                }
            }
            for error in &run.restart_errors {
                let _ = writeln!(out, "  {}: a restart failed: {error}", kind.name());
            }
        }
    }
    out
}

/// The targets io-fdpass sets its own mechanisms, each met or missed:
/// no failure, in keep-alive mode no connection closed by the server, p99
/// in the first 10 ms after a signal at most 2× steady, in the second
/// after it at most 1.5×, and no request slower than 20 ms.
pub fn targets(keep_alive: bool, results: &[(Kind, Vec<Run>)]) -> String {
    let mut out = String::new();
    for (kind, runs) in results.iter().filter(|(kind, _)| kind.is_ours()) {
        let failed: usize = runs
            .iter()
            .map(|run| {
                run.seen
                    .records
                    .iter()
                    .filter(|r| r.outcome.is_err())
                    .count()
            })
            .sum();
        let closed: usize = runs.iter().map(|run| run.seen.closed_by_server).sum();
        let mut all = Windows::default();
        for run in runs {
            all.extend(Windows::of(run));
        }
        let steady = quantile(&all.steady, 0.99);
        let first = ratio(quantile(&all.first, 0.99), steady);
        let second = ratio(quantile(&all.second, 0.99), steady);
        let max = [&all.first, &all.second, &all.steady]
            .iter()
            .filter_map(|sorted| sorted.last().copied())
            .max();
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        let _ = write!(
            out,
            "targets, {}: 0 failures {} ({failed})",
            kind.name(),
            met(failed == 0)
        );
        if keep_alive {
            let _ = write!(out, "; 0 closed {} ({closed})", met(closed == 0));
        }
        let _ = writeln!(
            out,
            "; p99 first 10 ms ≤ 2× steady {} ({}); second after ≤ 1.5× {} ({}); max < 20 ms {} ({} ms)",
            met(first.is_some_and(|r| r <= 2.0)),
            show_ratio(first),
            met(second.is_some_and(|r| r <= 1.5)),
            show_ratio(second),
            met(max.is_some_and(|m| m < Duration::from_millis(20))),
            ms(max)
        );
    }
    out
}

/// The latency under which a rate counts as sustained (p99), and the delay
/// against the load's schedule under which the load counts as keeping to
/// it (p99).
pub const SUSTAINED_P99: Duration = Duration::from_millis(5);

/// One step of the search for the highest rate: a server never restarted,
/// loaded at one rate.
pub struct Step {
    pub rate: u32,
    requests: usize,
    failed: usize,
    p99: Option<Duration>,
    late_p99: Option<Duration>,
    /// What went wrong first, if anything did.
    first_failure: Option<String>,
}

impl Step {
    /// The figures of `run`, a step at `rate`. As in the tables, the
    /// requests of the first 250 ms count for failures only.
    pub fn of(rate: u32, run: &Run) -> Step {
        let failed = run
            .seen
            .records
            .iter()
            .filter(|r| r.outcome.is_err())
            .count();
        let mut late: Vec<Duration> = run
            .seen
            .records
            .iter()
            .filter(|r| r.start >= WARM)
            .map(|r| r.late)
            .collect();
        late.sort();
        Step {
            rate,
            requests: run.seen.records.len(),
            failed: failed + run.restart_errors.len(),
            p99: quantile(&Windows::of(run).steady, 0.99),
            late_p99: quantile(&late, 0.99),
            first_failure: run
                .restart_errors
                .first()
                .cloned()
                .or_else(|| run.seen.first_failures.first().map(ToString::to_string)),
        }
    }

    /// Whether the server sustained the rate: no failure, p99 under
    /// `SUSTAINED_P99`, and the load kept to its schedule.
    pub fn sustained(&self) -> bool {
        self.failed == 0
            && self.p99.is_some_and(|p99| p99 < SUSTAINED_P99)
            && self.late_p99.is_some_and(|late| late < SUSTAINED_P99)
    }

    /// One line: the rate and what it showed.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:>10} {:>9} {:>7} {:>8} {:>9}  {}",
            self.rate,
            self.requests,
            self.failed,
            ms(self.p99),
            ms(self.late_p99),
            if self.sustained() {
                "sustained"
            } else {
                "missed"
            }
        );
        if let Some(failure) = &self.first_failure {
            let _ = write!(line, " ({failure})");
        }
        line
    }
}

/// The steps of a search for the highest rate, and the rate it found
/// (`bounded`: a higher rate was tried and missed).
pub fn search(title: &str, steps: &[Step], found: Option<u32>, bounded: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{title}\n");
    let _ = writeln!(
        out,
        "{:>10} {:>9} {:>7} {:>8} {:>9}",
        "requests/s", "requests", "failed", "p99, ms", "late p99"
    );
    for step in steps {
        let _ = writeln!(out, "{}", step.line());
    }
    let _ = match found {
        Some(rate) if bounded => writeln!(out, "the highest rate sustained: {rate} requests/s"),
        Some(rate) => writeln!(
            out,
            "the highest rate sustained: {rate} requests/s (the search ended before a rate it missed: it may sustain more)"
        ),
        None => writeln!(out, "no rate sustained"),
    };
    out
}
