//! The socket-activation variables (`activation::layout`): whatever
//! `LISTEN_*` says, the fds are taken only for this process, from 3 on (or
//! where `LISTEN_FDS_FIRST_FD` says), never more than the convention
//! allows, each with its name or none; a malformed variable is invalid
//! data that names it; and a layout with names that pass the name rules
//! reads back as it was written.

#![no_main]

use std::collections::HashMap;
use std::io::ErrorKind;

use io_fdpass::fuzzing::{layout, VARIABLES};
use io_fdpass::notify::check_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut fields = input.split(|&b| b == 0xff);
    let head = fields.next().unwrap_or_default();
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    let pid = u32::from_le_bytes([byte(0), byte(1), 0, 0]);
    let pidfd_id = (byte(2) & 1 != 0).then_some(u64::from(byte(3)));
    // Each variable: absent, the fuzzer's bytes, or (for the numbers) a
    // value that reads right, so that the rest gets looked at.
    let mut vars = HashMap::new();
    for (i, name) in VARIABLES.iter().enumerate() {
        let field = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        let value = match (byte(4 + i) % 4, *name) {
            (0, _) => continue,
            (1, _) => field,
            (_, "LISTEN_PID") => pid.to_string(),
            (_, "LISTEN_PIDFDID") => pidfd_id.unwrap_or(0).to_string(),
            (_, "LISTEN_FDS") => (byte(9) % 8).to_string(),
            (_, "LISTEN_FDS_FIRST_FD") => (byte(10) % 16).to_string(),
            _ => field,
        };
        vars.insert(*name, value);
    }
    let var = |name: &str| vars.get(name).cloned();

    match layout(var, pid, pidfd_id) {
        Ok(None) => {
            let ours = vars
                .get("LISTEN_PID")
                .is_some_and(|v| *v == pid.to_string());
            let other_pidfd = vars
                .get("LISTEN_PIDFDID")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|id| pidfd_id.is_some_and(|own| own != id));
            let named_pid = vars.get("LISTEN_PID").and_then(|v| v.parse::<u32>().ok());
            assert!(
                !ours || other_pidfd || named_pid != Some(pid),
                "{vars:?} {pid} {pidfd_id:?}"
            );
        }
        Ok(Some((first, count, names))) => {
            assert_eq!(vars["LISTEN_PID"].parse::<u32>().ok(), Some(pid));
            assert!(first >= 3, "{vars:?}");
            assert!(count <= 1 << 16, "{vars:?}");
            assert!(first.checked_add(count as i32).is_some());
            assert!(names.is_empty() || names.len() == count, "{vars:?}");
            assert!(names.iter().all(|n| !n.contains(':')));
            if !names.is_empty() {
                assert_eq!(names.join(":"), vars["LISTEN_FDNAMES"]);
            }
            // Written again as a starter writes them, they read the same.
            let again = write(pid, first, count, &names);
            let read = layout(|n: &str| again.get(n).cloned(), pid, pidfd_id).unwrap();
            assert_eq!(read, Some((first, count, names)));
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
            let text = e.to_string();
            assert!(VARIABLES.iter().any(|v| text.contains(v)), "{text}");
        }
    }

    // Names that pass the name rules go through LISTEN_FDNAMES whole.
    let names: Vec<String> = fields
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .filter(|n| check_name(n).is_ok())
        .collect();
    if !names.is_empty() {
        let first = 3 + i32::from(byte(11) % 8);
        let written = write(pid, first, names.len(), &names);
        let read = layout(|n: &str| written.get(n).cloned(), pid, None).unwrap();
        assert_eq!(read, Some((first, names.len(), names)));
    }
});

/// The variables a starter sets for `count` fds from `first` on.
fn write(pid: u32, first: i32, count: usize, names: &[String]) -> HashMap<&'static str, String> {
    let mut vars = HashMap::from([
        ("LISTEN_PID", pid.to_string()),
        ("LISTEN_FDS", count.to_string()),
    ]);
    if !names.is_empty() {
        vars.insert("LISTEN_FDNAMES", names.join(":"));
    }
    if first != 3 {
        vars.insert("LISTEN_FDS_FIRST_FD", first.to_string());
    }
    vars
}
