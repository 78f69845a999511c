//! fdpass under a real systemd, booted in a container, with the unit files
//! of `fdpass/examples/` as shipped (only the binaries' path changed):
//! the holder through `kill -9`, reload, and stop and start; the sockets of
//! `.socket` units, named, as its `LISTEN_FDS`; a server that fetches its
//! socket from the holder and restarts itself; `fdpass adopt` replacing a
//! legacy unit's server; and `fdpass listen` as a unit's `ExecStart`.

#![cfg(target_os = "linux")]

mod util;

/// Needs root, for systemd-nspawn: run by `.ci/test` as root.
mod needs_root {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    use io_fdpass_test_support::systemd::{as_tested, reload_twice, Client, Machine};

    const SOCK: &str = "/run/fdpass/fds.sock";
    const FDPASS: &str = "/shared/fdpass";

    /// The shipped unit `path` (under the workspace), named `name`, as the
    /// test runs it.
    fn shipped(name: &'static str, path: &str) -> (&'static str, String) {
        let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
        (name, as_tested(&std::fs::read_to_string(path).unwrap()))
    }

    /// `examples/restart.rs` of the library, which `cargo test --workspace
    /// --all-features` builds.
    fn restart_example() -> PathBuf {
        let path = PathBuf::from(env!("CARGO_BIN_EXE_fdpass"))
            .parent()
            .unwrap()
            .join("examples/restart");
        assert!(
            path.exists(),
            "{} is missing: run the tests with cargo test --workspace --all-features",
            path.display()
        );
        path
    }

    fn boot(test: &str, units: &[(&str, String)]) -> Option<Machine> {
        let fdpass = PathBuf::from(env!("CARGO_BIN_EXE_fdpass"));
        Machine::boot(test, units, &[&fdpass, &restart_example()])
    }

    /// What the holder holds, as `fdpass list --json` says it.
    fn listing(machine: &Machine) -> String {
        machine.run(&[FDPASS, "list", "--json", SOCK])
    }

    /// The names in a listing, in order.
    fn names(listing: &str) -> Vec<String> {
        listing
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once("\"name\":\"")?;
                Some(rest.split('"').next()?.to_owned())
            })
            .collect()
    }

    /// Puts a TCP listener (http), a file (file) and a file with a
    /// lifetime (ticket) in the holder.
    fn store_three(machine: &Machine) {
        machine.run(&[
            FDPASS,
            "listen",
            "tcp:127.0.0.1:8080",
            "--name",
            "http",
            "--",
            FDPASS,
            "store",
            SOCK,
            "http",
            "3",
        ]);
        for (name, extra) in [("file", ""), ("ticket", "--ttl 1h")] {
            machine.run(&[
                "sh",
                "-c",
                &format!("exec {FDPASS} store {extra} {SOCK} {name} 3 3</usr/lib/os-release"),
            ]);
        }
    }

    /// The number of connections waiting in the holder's accept queue.
    fn queued(machine: &Machine) -> usize {
        // For a listening socket, Recv-Q is its accept queue. The holder
        // binds its socket under another name in the same directory, then
        // renames it, and ss says the name it was bound at.
        let out = machine.run(&["ss", "-xlHn"]);
        out.lines()
            .filter(|line| {
                line.split_whitespace()
                    .any(|word| word.starts_with("/run/fdpass/"))
            })
            .filter_map(|line| line.split_whitespace().nth(2)?.parse::<usize>().ok())
            .sum()
    }

    #[test]
    #[ignore = "needs root: boots systemd in a container; .ci/test runs it as root"]
    fn the_holder_under_systemd_loses_nothing() {
        let socket = |name: &str, listen: &str| {
            format!(
                "[Socket]\nListenStream={listen}\nFileDescriptorName={name}\n\
                 Service=fdpass-hold.service\n"
            )
        };
        let units = [
            shipped("fdpass-hold.service", "fdpass/examples/fdpass-hold.service"),
            shipped(
                "fdpass-fetch.service",
                "fdpass/examples/fdpass-fetch.service",
            ),
            ("web.socket", socket("web", "127.0.0.1:9001")),
            ("admin.socket", socket("admin", "/run/admin.sock")),
        ];
        let Some(machine) = boot("the holder under systemd", &units) else {
            return;
        };
        let hold = "fdpass-hold.service";

        // Two .socket units for the holder, each named: it takes both from
        // LISTEN_FDS by name (ListenFds), and holds them.
        machine.systemctl(&["start", "web.socket", "admin.socket", hold]);
        let given = listing(&machine);
        assert_eq!(names(&given), ["admin", "web"], "{given}");
        assert!(given.contains("127.0.0.1:9001") && given.contains("/run/admin.sock"));
        // After kill -9 the sockets come from the socket units and from the
        // fd store both: held once each.
        machine.kill_9(hold);
        assert_eq!(listing(&machine), given);
        machine.systemctl(&["stop", hold, "web.socket", "admin.socket"]);

        machine.systemctl(&["start", hold]);
        store_three(&machine);
        let before = listing(&machine);
        assert_eq!(names(&before), ["file", "http", "ticket"], "{before}");
        machine.systemctl(&["start", "fdpass-fetch.service"]);
        let client = Client::start(&machine, 8080);

        // kill -9 while a client waits in the queue: systemd starts the
        // holder again with everything from the fd store, and the waiting
        // client is answered.
        machine.systemctl(&["kill", "-s", "STOP", hold]);
        let waiting = Command::new("nsenter")
            .args(["-t", &machine.leader().to_string(), "-a"])
            .args([FDPASS, "list", "--timeout", "60s", SOCK])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        io_fdpass_test_support::wait_until(
            || queued(&machine) > 0,
            || {
                format!(
                    "the client's connection never queued:\n{}",
                    machine.run(&["ss", "-xlHn"])
                )
            },
        );
        machine.kill_9(hold);
        let answer = waiting.wait_with_output().unwrap();
        assert!(answer.status.success(), "{answer:?}");
        let answer = String::from_utf8(answer.stdout).unwrap();
        for name in ["file", "http", "ticket"] {
            assert!(answer.contains(name), "{answer}");
        }
        assert_eq!(listing(&machine), before, "names, kinds or owners changed");

        // Reload: the holder executes itself again, same pid, same names.
        let pid = machine.main_pid(hold);
        machine.systemctl(&["reload", hold]);
        assert_eq!(machine.main_pid(hold), pid);
        assert_eq!(listing(&machine), before);

        // The server that fetched its socket restarts itself twice.
        let generations = reload_twice(&machine, "fdpass-fetch.service", &client);
        client.finish(&generations, &machine);

        // Stop and start: the fd store goes with the stop before systemd
        // 254 (FileDescriptorStorePreserve=), and with it what was held.
        machine.systemctl(&["stop", hold]);
        machine.systemctl(&["start", hold]);
        let after = listing(&machine);
        if systemd_version() >= 254 {
            assert_eq!(names(&after), names(&before), "{after}");
        } else {
            assert_eq!(names(&after), Vec::<String>::new(), "{after}");
        }
    }

    /// The version of the systemd under test: this machine's.
    fn systemd_version() -> u32 {
        let out = Command::new("systemctl").arg("--version").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    #[ignore = "needs root: boots systemd in a container; .ci/test runs it as root"]
    fn adopt_and_listen_as_units_hand_over_to_systemd() {
        let units = [
            shipped(
                "fdpass-adopt.service",
                "fdpass/examples/fdpass-adopt.service",
            ),
            (
                "legacy.service",
                "[Service]\nType=notify\nExecStart=/shared/restart 127.0.0.1:8080\n".into(),
            ),
            (
                "listen.service",
                format!(
                    "[Service]\nType=notify\nNotifyAccess=all\nExecStart={FDPASS} listen \
                     tcp:127.0.0.1:8082 --name http -- /shared/restart\n\
                     ExecReload=/bin/kill -HUP $MAINPID\n"
                ),
            ),
        ];
        let Some(machine) = boot("fdpass adopt and listen under systemd", &units) else {
            return;
        };

        // The legacy server, replaced: its unit ends as it exits, and the
        // new server is the main process of fdpass-adopt, which is active
        // once the new server said READY=1.
        machine.systemctl(&["start", "legacy.service"]);
        let legacy = machine.main_pid("legacy.service");
        let client = Client::start(&machine, 8080);
        client.wait_for_answers_by(legacy, 50, &machine);
        machine.systemctl(&["start", "fdpass-adopt.service"]);
        machine.wait_state("legacy.service", "inactive");
        assert_eq!(machine.show("legacy.service", "Result"), "success");
        let mut served_by = vec![legacy];
        served_by.extend(reload_twice(&machine, "fdpass-adopt.service", &client));
        client.finish(&served_by, &machine);

        // fdpass listen as ExecStart: the server it executes restarts
        // itself, followed by systemd.
        machine.systemctl(&["start", "listen.service"]);
        let client = Client::start(&machine, 8082);
        let generations = reload_twice(&machine, "listen.service", &client);
        client.finish(&generations, &machine);
    }
}
