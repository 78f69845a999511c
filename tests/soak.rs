//! The soak: a hostile peer, written with raw libc calls, sends the faults
//! of `util::faults` to every receive call, over stream, seqpacket and
//! datagram sockets, transfer after transfer, while per-thread SIGALRM
//! storms (installed without `SA_RESTART`) interrupt the calls of both
//! sides. Each outcome must be exactly what the docs promise for what was
//! sent. At the end no fd may be left open, no copy of a pipe's write end
//! may be left anywhere (its read end reads the end), and the resident
//! memory may have grown by less than 1 MiB.
//!
//! ```sh
//! IO_FDPASS_SOAK_TRANSFERS=1000000 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! The transfers come from a seed (`IO_FDPASS_SEED`), so that a failure
//! repeats; each failure prints the transfer it failed on.

#![cfg(target_os = "linux")]

mod util;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use util::faults::{self, Choose, Fillers, Markers, Outcome, Plan, Rng};

/// Workers, each with a peer thread.
const WORKERS: usize = 2;

/// Signals the storms delivered, in all threads.
static SIGNALS: AtomicU64 = AtomicU64::new(0);

/// Held shared by each transfer, and exclusively by one under a lowered fd
/// limit, which is process-wide.
static FD_LIMIT: RwLock<()> = RwLock::new(());

/// What a worker hands its peer thread: a transfer to send while the
/// worker waits in the receive call, and the peer's end of the socket.
type Send = (Plan, OwnedFd);

/// What one worker counted.
#[derive(Default)]
struct Counts {
    transfers: u64,
    fds_sent: u64,
    faults: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: a number, not {v:?}"))
    })
}

#[test]
#[ignore = "a long soak: run it with --ignored (IO_FDPASS_SOAK_TRANSFERS sets its length)"]
fn soak() {
    let transfers = number("IO_FDPASS_SOAK_TRANSFERS", 100_000);
    let seed = number("IO_FDPASS_SEED", 0x5eed_50a6);
    faults::raise_fd_limit();
    install_sigalrm_handler();
    let fds_at_start = util::fd_count();
    let markers = Arc::new(Markers::new());
    let progress = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();

    let share = transfers.div_ceil(WORKERS as u64);
    let peers: Vec<_> = (0..WORKERS as u64)
        .map(|i| {
            let count = share.min(transfers - (share * i).min(transfers));
            let (markers, progress) = (Arc::clone(&markers), Arc::clone(&progress));
            std::thread::spawn(move || worker(seed ^ (i + 1) << 32, count, &markers, &progress))
        })
        .collect();
    // The memory of the first transfers (thread stacks, buffers that grow
    // once) is not growth: the baseline is taken after a warm-up.
    let warm_up = (transfers / 20).max(1) as usize;
    let mut rss_baseline = None;
    while peers.iter().any(|p| !p.is_finished()) {
        if rss_baseline.is_none() && progress.load(Ordering::Relaxed) >= warm_up {
            let _shared = FD_LIMIT.read().unwrap();
            rss_baseline = Some(rss());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let rss_at_end = rss();
    let counts = join(peers);
    let elapsed = began.elapsed();
    let markers = Arc::into_inner(markers).expect("every thread is done with the markers");
    let end_seen = markers.close_and_see_the_end();
    let fds_at_end = util::fd_count();
    let growth = rss_at_end.saturating_sub(rss_baseline.unwrap_or(rss_at_end));

    print_counts(&counts, elapsed, seed);
    println!(
        "soak: leaks: fds {fds_at_start} at the start, {fds_at_end} at the end; the passed pipe \
         {} the end; RSS {} KiB after the warm-up, {} KiB at the end (+{} KiB)",
        if end_seen { "reads" } else { "does NOT read" },
        rss_baseline.unwrap_or(rss_at_end) / 1024,
        rss_at_end / 1024,
        growth / 1024
    );
    assert_eq!(counts.transfers, transfers);
    assert_eq!(
        fds_at_start,
        fds_at_end,
        "fds leaked: {:?}",
        util::open_fds()
    );
    assert!(
        end_seen,
        "a copy of the passed pipe's write end is still open"
    );
    assert!(growth < 1 << 20, "RSS grew by {growth} bytes");
}

/// Waits for every worker and adds up what they counted.
fn join(workers: Vec<JoinHandle<Counts>>) -> Counts {
    let mut counts = Counts::default();
    for worker in workers {
        let c = worker
            .join()
            .expect("a peer or its receiver failed: see above");
        counts.transfers += c.transfers;
        counts.fds_sent += c.fds_sent;
        for (k, v) in c.faults {
            *counts.faults.entry(k).or_default() += v;
        }
        for (k, v) in c.outcomes {
            *counts.outcomes.entry(k).or_default() += v;
        }
    }
    counts
}

/// Prints what the workers counted over `elapsed`: the transfers and their
/// rate, the signals delivered, and the transfers by fault and by outcome.
fn print_counts(counts: &Counts, elapsed: Duration, seed: u64) {
    println!(
        "soak: {} transfers ({} fds sent) in {:.1} s, {:.0}/s, seed {seed:#x}",
        counts.transfers,
        counts.fds_sent,
        elapsed.as_secs_f64(),
        counts.transfers as f64 / elapsed.as_secs_f64()
    );
    println!(
        "soak: SIGALRM delivered: {}",
        SIGNALS.load(Ordering::Relaxed)
    );
    for (fault, n) in &counts.faults {
        println!("soak: fault {fault}: {n} transfers");
    }
    for (outcome, n) in &counts.outcomes {
        println!("soak: outcome {outcome}: {n}");
    }
}

/// One worker: `count` transfers, each received here with the library's
/// calls. Most it sends itself first, with raw calls; one in eight of
/// those that can be it leaves to its peer thread, to send while the
/// worker already waits in the call, which the storms interrupt.
fn worker(seed: u64, count: u64, markers: &Arc<Markers>, progress: &AtomicUsize) -> Counts {
    let _storm = Storm::start();
    let (sends, sends_rx) = channel::<Send>();
    let (sent_tx, sent) = channel::<Option<OwnedFd>>();
    let peer = {
        let markers = Arc::clone(markers);
        std::thread::spawn(move || peer(&sends_rx, &sent_tx, &markers))
    };
    let mut fillers = {
        let _shared = FD_LIMIT.read().unwrap();
        Fillers::new(markers)
    };
    let mut rng = Rng(seed | 1);
    let mut sockets: [Option<(OwnedFd, OwnedFd)>; 3] = [None, None, None];
    let mut counts = Counts::default();
    for _ in 0..count {
        let mut plan = Plan::choose(&mut rng);
        // Taken before any fd is made: a lowered limit would refuse it.
        let (exclusive, shared) = match plan.free_slots {
            Some(_) => (Some(FD_LIMIT.write().unwrap()), None),
            None => (None, Some(FD_LIMIT.read().unwrap())),
        };
        let slot = &mut sockets[plan.ty as usize];
        let (peer_end, socket) = slot.take().unwrap_or_else(|| faults::pair(plan.ty));
        faults::set_options(&mut plan, socket.as_fd());
        let expected = faults::expect(&plan);
        let (got, peer_end) = if plan.receiver_may_wait() && rng.chance(8) {
            sends.send((plan.clone(), peer_end)).unwrap();
            let got = faults::receive(&plan, socket.as_fd(), markers, &mut fillers);
            (
                got,
                sent.recv().expect("the peer failed: see its panic above"),
            )
        } else {
            let peer_end = faults::send(&plan, peer_end, markers);
            let saved = plan.free_slots.map(faults::lower_fd_limit);
            let got = faults::receive(&plan, socket.as_fd(), markers, &mut fillers);
            if let Some(saved) = saved {
                rustix::process::setrlimit(rustix::process::Resource::Nofile, saved).unwrap();
            }
            (got, peer_end)
        };
        assert_eq!(got, expected.outcome, "{plan:?}");
        let kind = match &got {
            Outcome::Failed(kind) => format!("{kind:?}"),
            _ => "received".to_owned(),
        };
        *counts.outcomes.entry(kind).or_default() += 1;
        counts.transfers += 1;
        counts.fds_sent += plan.fds_sent() as u64;
        for fault in plan.faults() {
            *counts.faults.entry(format!("{fault:?}")).or_default() += 1;
        }
        progress.fetch_add(1, Ordering::Relaxed);
        // A socket with something left in it, or whose peer hung up, is
        // closed, and before the lock is let go of: a transfer that lowers
        // the limit counts on every other fd staying as it is.
        match peer_end {
            Some(peer_end) if !expected.leftover => *slot = Some((peer_end, socket)),
            peer_end => drop((peer_end, socket)),
        }
        drop((exclusive, shared));
    }
    drop(sends);
    peer.join().expect("the peer failed: see above");
    counts
}

/// A worker's peer thread: sends each transfer it is handed and gives the
/// socket's end back.
fn peer(sends: &Receiver<Send>, sent: &Sender<Option<OwnedFd>>, markers: &Markers) {
    let _storm = Storm::start();
    for (plan, peer_end) in sends {
        sent.send(faults::send(&plan, peer_end, markers)).unwrap();
    }
}

extern "C" fn on_sigalrm(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// SIGALRM's handler, without `SA_RESTART`, so that each signal makes a
/// blocked system call fail with `EINTR`.
fn install_sigalrm_handler() {
    // SAFETY: all-zero bytes are a valid sigaction; the handler only
    // touches an atomic, which is async-signal-safe. rustix has no
    // sigaction.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigalrm as *const () as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&raw mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGALRM, &raw const action, std::ptr::null_mut()),
            0
        );
    }
}

/// A storm of SIGALRM at one thread: a timer of its own, every 200 µs, for
/// as long as this lives.
struct Storm(libc::timer_t);

impl Storm {
    fn start() -> Storm {
        // SAFETY: all-zero bytes are a valid sigevent; the timer signals
        // this thread (its tid), and `Storm` deletes it before the thread
        // ends. rustix has no timer_create.
        unsafe {
            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_THREAD_ID;
            event.sigev_signo = libc::SIGALRM;
            event.sigev_notify_thread_id = libc::gettid();
            let mut timer: libc::timer_t = std::ptr::null_mut();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &raw mut event, &raw mut timer),
                0
            );
            let every = libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000,
            };
            let spec = libc::itimerspec {
                it_interval: every,
                it_value: every,
            };
            assert_eq!(
                libc::timer_settime(timer, 0, &raw const spec, std::ptr::null_mut()),
                0
            );
            Storm(timer)
        }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        // SAFETY: the timer `start` made, deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// This process's resident memory, in bytes (`VmRSS`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
