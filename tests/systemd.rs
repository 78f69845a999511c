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
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use io_fdpass_test_support::http;
    use io_fdpass_test_support::systemd::{as_tested, reload_twice, Client, Machine};

    use crate::util::example;

    const UNITS: [&str; 3] = [
        "restart.service",
        "restart-activated.socket",
        "restart-activated.service",
    ];

    /// The shipped unit `name`, as the test runs it.
    fn unit(name: &str) -> (&str, String) {
        let path = format!("{}/examples/systemd/{name}", env!("CARGO_MANIFEST_DIR"));
        (name, as_tested(&std::fs::read_to_string(path).unwrap()))
    }

    #[test]
    #[ignore = "needs root: boots systemd in a container; .ci/test runs it as root"]
    fn restart_under_systemd_keeps_the_unit_and_every_request() {
        let units: Vec<_> = UNITS.iter().map(|name| unit(name)).collect();
        let example = example("restart");
        let Some(machine) = Machine::boot("restart under systemd", &units, &[&example]) else {
            return;
        };

        // Started by systemd, reloaded by SIGHUP.
        machine.systemctl(&["start", "restart.service"]);
        let client = Client::start(&machine, 8080);
        let generations = reload_twice(&machine, "restart.service", &client);
        client.finish(&generations, &machine);
        // systemd watches the last generation, which it did not start: a
        // crash of it is a crash of the service (Restart=on-failure).
        machine.kill_9("restart.service");
        assert_eq!(machine.show("restart.service", "NRestarts"), "1");
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

    /// What examples/fdstore.rs says the fd store gave it, and its pid.
    fn fdstore_says(machine: &Machine) -> (String, u32) {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8090));
        let reply = machine
            .in_network(move || http::wait_until_answers(addr))
            .join()
            .unwrap();
        // In the order of systemd's store, which is not the order stored.
        let mut gave: Vec<&str> = reply
            .split_once("the fd store gave: ")
            .and_then(|(_, rest)| rest.lines().next())
            .unwrap_or_else(|| panic!("{reply:?}"))
            .split(' ')
            .collect();
        gave.sort_unstable();
        let gave = gave.join(" ");
        let pid = reply
            .rsplit_once("served by pid ")
            .and_then(|(_, pid)| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("{reply:?}"));
        (gave, pid)
    }

    #[test]
    #[ignore = "needs root: boots systemd in a container; .ci/test runs it as root"]
    fn the_fd_store_keeps_fds_across_kill_9_until_removed() {
        let units = [unit("fdstore.service")];
        let example = example("fdstore");
        let Some(machine) = Machine::boot("the fd store under systemd", &units, &[&example]) else {
            return;
        };
        let unit = "fdstore.service";
        machine.systemctl(&["start", unit]);
        let (gave, first) = fdstore_says(&machine);
        assert_eq!(gave, "nothing");

        // store_fds: the socket and both ends of the pipe come back.
        machine.kill_9(unit);
        let (gave, second) = fdstore_says(&machine);
        assert_ne!(second, first);
        assert_eq!(gave, "http scratch scratch", "{}", machine.journal());

        // remove_fds: the pipe is gone at the next start, the socket not.
        let forgot = machine
            .in_network(|| {
                let mut stream = TcpStream::connect(("127.0.0.1", 8090)).unwrap();
                stream.write_all(b"FORGET\n").unwrap();
                let mut reply = String::new();
                stream.read_to_string(&mut reply).unwrap();
                reply
            })
            .join()
            .unwrap();
        assert!(forgot.ends_with("forgot scratch\n"), "{forgot:?}");
        machine.kill_9(unit);
        let (gave, _) = fdstore_says(&machine);
        assert_eq!(gave, "http", "{}", machine.journal());
    }
}
