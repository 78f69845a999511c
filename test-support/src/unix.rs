//! Open fds, counted in `/proc`.

/// What the count is of, for failure messages.
pub const OPEN: &str = "fds";

pub fn open_count() -> usize {
    fd_count()
}

/// The open fds listed, for failure messages.
pub fn what_is_open() -> String {
    format!("; open now: {:?}", open_fds())
}

/// How many fds this process has open.
#[must_use]
pub fn fd_count() -> usize {
    // The directory's own fd is counted too, the same every time.
    count_in("/proc/self/fd")
}

/// How many fds the process `pid` has open.
#[must_use]
pub fn fd_count_of(pid: u32) -> usize {
    count_in(&format!("/proc/{pid}/fd"))
}

fn count_in(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .count()
}

/// What each open fd of this process refers to, for failure messages.
#[must_use]
pub fn open_fds() -> Vec<String> {
    listed_in("/proc/self/fd")
}

/// What each open fd of the process `pid` refers to, for failure messages.
#[must_use]
pub fn open_fds_of(pid: u32) -> Vec<String> {
    listed_in(&format!("/proc/{pid}/fd"))
}

fn listed_in(dir: &str) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}
