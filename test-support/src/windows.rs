//! Open handles, counted by `GetProcessHandleCount`.

use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};

/// What the count is of, for failure messages.
pub const OPEN: &str = "handles";

pub fn open_count() -> usize {
    handle_count() as usize
}

/// Windows cannot list a process's handles cheaply: nothing to add.
pub fn what_is_open() -> String {
    String::new()
}

/// How many handles this process has open.
pub fn handle_count() -> u32 {
    let mut count = 0;
    // SAFETY: the current-process pseudo-handle and a writable u32.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
    assert_ne!(ok, 0, "GetProcessHandleCount");
    count
}
