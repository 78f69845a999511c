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
    use std::path::PathBuf;

    use io_fdpass_test_support::systemd::{as_tested, reload_twice, Client, Machine};

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
        let client = Client::start(&machine, 8080);
        let generations = reload_twice(&machine, "restart.service", &client);
        client.finish(&generations, &machine);
        machine.systemctl(&["stop", "restart.service"]);
        assert_eq!(machine.show("restart.service", "ActiveState"), "inactive");
        assert_eq!(machine.show("restart.service", "Result"), "success");

        // The same, the socket systemd's: the instance that the first
        // connection started is the one that answers throughout.
        machine.systemctl(&["start", "restart-activated.socket"]);
        let service = "restart-activated.service";
        let client = Client::start(&machine, 8081);
        machine.wait_state(service, "active");
        let invocation = machine.show(service, "InvocationID");
        let generations = reload_twice(&machine, service, &client);
        // Each answer came from a generation of the one instance.
        client.finish(&generations, &machine);
        assert_eq!(
            machine.show(service, "InvocationID"),
            invocation,
            "systemd started the service again:\n{}",
            machine.journal()
        );
    }
}
