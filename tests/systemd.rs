//! `io_fdpass::restart` under a real systemd, booted in a container: the
//! shipped units of `examples/systemd/` run `examples/restart.rs`, which is
//! reloaded twice while a client makes requests without pause. Not one
//! request fails, the unit stays active with each generation in turn as
//! its main process, and systemd never restarts it, nor starts an instance
//! from the socket beside the one that serves.
#![cfg(all(target_os = "linux", feature = "tokio"))]

mod util;

/// Needs root, for systemd-nspawn: run by `.ci/test` as root.
mod needs_root {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use io_fdpass_test_support::systemd::{as_tested, Machine};

    use super::util::http::{self, Failure, FailureKind, Tally};

    const UNITS: [&str; 3] = [
        "restart.service",
        "restart-activated.socket",
        "restart-activated.service",
    ];

    /// The example's binary, which `cargo test` builds beside the tests.
    fn example() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let path = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/restart");
        assert!(
            path.exists(),
            "{} is missing: run the tests with cargo test --features tokio",
            path.display()
        );
        path
    }

    /// The shipped unit `name`, as the test runs it.
    fn unit(name: &str) -> (&str, String) {
        let path = format!("{}/examples/systemd/{name}", env!("CARGO_MANIFEST_DIR"));
        (name, as_tested(&std::fs::read_to_string(path).unwrap()))
    }

    /// What the client has seen: every request counted, and the pids that
    /// answered.
    #[derive(Default)]
    struct Seen {
        tally: Tally,
        answers: usize,
        by: BTreeSet<u32>,
        last: Option<u32>,
    }

    /// A client in the container's network, making one request after
    /// another until stopped.
    struct Client {
        seen: Arc<Mutex<Seen>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    fn request(addr: SocketAddr) -> Result<u32, Failure> {
        let reply = http::get(addr)?;
        reply
            .rsplit_once("served by pid ")
            .and_then(|(_, pid)| pid.trim().parse().ok())
            .ok_or_else(|| Failure {
                kind: FailureKind::Bad,
                detail: format!("a reply without a pid: {reply:?}"),
            })
    }

    impl Client {
        /// Waits for the first answer (the one wait that may retry: the
        /// service starts), then counts every request.
        fn start(machine: &Machine, port: u16) -> Client {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let seen = Arc::new(Mutex::new(Seen::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = machine.in_network({
                let (seen, stop) = (seen.clone(), stop.clone());
                move || {
                    let _ = http::wait_until_answers(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let answer = request(addr);
                        let mut seen = seen.lock().unwrap();
                        seen.tally.count(&answer);
                        if let Ok(pid) = answer {
                            seen.answers += 1;
                            seen.by.insert(pid);
                            seen.last = Some(pid);
                        }
                    }
                }
            });
            Client {
                seen,
                stop,
                thread: Some(thread),
            }
        }

        /// Waits until `pid` has answered `n` more requests than now.
        fn wait_for_answers_by(&self, pid: u32, n: usize, machine: &Machine) {
            let mut from = None;
            io_fdpass_test_support::wait_until(
                || {
                    let seen = self.seen.lock().unwrap();
                    if seen.last != Some(pid) {
                        return false;
                    }
                    let start = *from.get_or_insert(seen.answers);
                    seen.answers >= start + n
                },
                || {
                    let seen = self.seen.lock().unwrap();
                    format!(
                        "pid {pid} did not answer {n} requests: {}; by {:?}\n{}",
                        seen.tally,
                        seen.by,
                        machine.journal()
                    )
                },
            );
        }

        fn stop(mut self) -> Seen {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap();
            std::mem::take(&mut self.seen.lock().unwrap())
        }
    }

    /// Reloads `unit` twice under the client: each time a new generation
    /// becomes the main process, the old one exits, and the unit stays
    /// active; the pids that answered are the generations', in turn.
    fn reload_twice(machine: &Machine, unit: &str, port: u16) -> Vec<u32> {
        let client = Client::start(machine, port);
        machine.wait_state(unit, "active");
        let mut generations = vec![machine.main_pid(unit)];
        client.wait_for_answers_by(generations[0], 50, machine);
        for _ in 0..2 {
            let old = *generations.last().unwrap();
            machine.systemctl(&["reload", unit]);
            io_fdpass_test_support::wait_until(
                || {
                    let pid = machine.main_pid(unit);
                    pid != old && pid != 0
                },
                || format!("MainPID of {unit} is still {old}:\n{}", machine.journal()),
            );
            let next = machine.main_pid(unit);
            // The old generation exits once it has finished: then systemd
            // would have stopped the unit, had it not followed the next.
            io_fdpass_test_support::wait_until(
                || !machine.nsenter(&["test", "-e", &format!("/proc/{old}")]).status.success(),
                || format!("generation {old} did not exit:\n{}", machine.journal()),
            );
            client.wait_for_answers_by(next, 50, machine);
            assert_eq!(machine.show(unit, "ActiveState"), "active", "{}", machine.journal());
            assert_eq!(machine.main_pid(unit), next, "{}", machine.journal());
            generations.push(next);
        }
        let seen = client.stop();
        seen.tally.assert_none_failed();
        assert_eq!(
            seen.by,
            generations.iter().copied().collect(),
            "answers came from pids that were no generation of the unit's:\n{}",
            machine.journal()
        );
        assert_eq!(machine.show(unit, "NRestarts"), "0");
        println!(
            "{unit}: {} answers, generations {generations:?}, {}",
            seen.answers, seen.tally
        );
        generations
    }

    #[test]
    #[ignore = "needs root: boots systemd in a container; .ci/test runs it as root"]
    fn restart_under_systemd_keeps_the_unit_and_every_request() {
        let units: Vec<_> = UNITS.iter().map(|name| unit(name)).collect();
        let example = example();
        let Some(machine) = Machine::boot("restart under systemd", &units, &[&example]) else {
            return;
        };

        // Started by systemd, reloaded by SIGHUP.
        machine.systemctl(&["start", "restart.service"]);
        reload_twice(&machine, "restart.service", 8080);
        machine.systemctl(&["stop", "restart.service"]);

        // The same, the socket systemd's: the instance that the first
        // connection started is the one that answers throughout.
        machine.systemctl(&["start", "restart-activated.socket"]);
        let service = "restart-activated.service";
        let client = Client::start(&machine, 8081);
        machine.wait_state(service, "active");
        let invocation = machine.show(service, "InvocationID");
        drop(client.stop());
        reload_twice(&machine, service, 8081);
        assert_eq!(
            machine.show(service, "InvocationID"),
            invocation,
            "systemd started the service again:\n{}",
            machine.journal()
        );
    }
}
