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

/// Why the tests that need `AF_UNIX` sockets cannot run here, or `None`
/// where they can: a raw `WSASocketW(AF_UNIX, SOCK_STREAM)` fails with
/// `WSAEAFNOSUPPORT` before Windows 10 1803 and under Wine 8. Asked with
/// raw calls, not with the code under test.
pub fn no_af_unix() -> Option<String> {
    use windows_sys::Win32::Networking::WinSock::{
        closesocket, WSAGetLastError, WSASocketW, WSAStartup, AF_UNIX, INVALID_SOCKET, SOCK_STREAM,
        WSADATA, WSAEAFNOSUPPORT,
    };
    // SAFETY: WSADATA is plain data, filled by the call; the start is
    // never undone, as std does.
    let started = unsafe {
        let mut data: WSADATA = std::mem::zeroed();
        WSAStartup(0x0202, &mut data)
    };
    assert_eq!(started, 0, "WSAStartup");
    // SAFETY: no protocol info; a failed call returns INVALID_SOCKET.
    let socket = unsafe { WSASocketW(i32::from(AF_UNIX), SOCK_STREAM, 0, std::ptr::null(), 0, 0) };
    if socket == INVALID_SOCKET {
        // SAFETY: reads this thread's last Winsock error.
        let code = unsafe { WSAGetLastError() };
        assert_eq!(
            code, WSAEAFNOSUPPORT,
            "an AF_UNIX socket failed otherwise than for want of AF_UNIX"
        );
        return Some(
            "this Windows has no AF_UNIX sockets (WSAEAFNOSUPPORT: before Windows 10 1803, and under Wine 8)"
                .into(),
        );
    }
    // SAFETY: a socket this function made and closes once.
    unsafe { closesocket(socket) };
    None
}

/// Whether a test that needs `AF_UNIX` sockets must be skipped here: if
/// so, says so ([`skipped`](crate::skipped)).
pub fn skip_without_af_unix(test: &str) -> bool {
    let Some(why) = no_af_unix() else {
        return false;
    };
    crate::skipped(test, &why);
    true
}

/// Whether a test of what happens where Windows has no `AF_UNIX` must be
/// skipped here, where it has: if so, says so ([`skipped`](crate::skipped)).
pub fn skip_with_af_unix(test: &str) -> bool {
    if no_af_unix().is_some() {
        return false;
    }
    crate::skipped(test, "this Windows has AF_UNIX sockets");
    true
}

/// Leaves a socket file at `path` as a holder ended by `TerminateProcess`
/// does: an `AF_UNIX` socket bound there and closed, which nothing listens
/// at. Made with raw calls, not with the code under test.
///
/// # Panics
///
/// Where Windows has no `AF_UNIX` ([`no_af_unix`]), or the bind fails.
pub fn stale_socket_file(path: &std::path::Path) {
    use windows_sys::Win32::Networking::WinSock::{
        bind, closesocket, WSAGetLastError, WSASocketW, AF_UNIX, INVALID_SOCKET, SOCKADDR,
        SOCKADDR_UN, SOCK_STREAM,
    };
    assert!(no_af_unix().is_none(), "no AF_UNIX here");
    let text = path.to_str().unwrap().as_bytes();
    assert!(text.len() < 108, "{path:?} is too long for sun_path");
    let mut address = SOCKADDR_UN {
        sun_family: AF_UNIX,
        sun_path: [0; 108],
    };
    for (slot, &byte) in address.sun_path.iter_mut().zip(text) {
        *slot = byte as i8;
    }
    // SAFETY: as in no_af_unix.
    let socket = unsafe { WSASocketW(i32::from(AF_UNIX), SOCK_STREAM, 0, std::ptr::null(), 0, 0) };
    assert_ne!(socket, INVALID_SOCKET);
    // SAFETY: a SOCKADDR_UN alive for the call, of the size given.
    let bound = unsafe {
        bind(
            socket,
            std::ptr::from_ref(&address).cast::<SOCKADDR>(),
            std::mem::size_of::<SOCKADDR_UN>() as i32,
        )
    };
    // SAFETY: reads this thread's last Winsock error.
    let error = unsafe { WSAGetLastError() };
    // SAFETY: a socket this function made and closes once.
    unsafe { closesocket(socket) };
    assert_eq!(bound, 0, "bind {path:?}: Winsock error {error}");
    // Not `exists`, which follows the reparse point the file is.
    assert!(
        std::fs::symlink_metadata(path).is_ok(),
        "no socket file at {path:?} after bind"
    );
}
