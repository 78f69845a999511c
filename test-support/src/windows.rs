//! Open handles, counted by `GetProcessHandleCount`, or where that says 0
//! (as Wine 8's does, whatever is open) in the system's handle table.

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectTypeInformation};
use windows_sys::Wdk::System::SystemInformation::NtQuerySystemInformation;
use windows_sys::Win32::Foundation::{HANDLE, UNICODE_STRING};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};

/// What the count is of, for failure messages.
pub const OPEN: &str = "handles";

pub fn open_count() -> usize {
    handle_count() as usize
}

/// Whether the handles are counted in the system's handle table, where
/// `GetProcessHandleCount` says 0 (under Wine 8).
#[must_use]
pub fn counts_in_system_table() -> bool {
    process_handle_count() == 0
}

/// Whether a handle may still be listed for a while after it is closed:
/// where the count is of the system's handle table.
#[must_use]
pub fn closes_late() -> bool {
    counts_in_system_table()
}

/// Where the handles are counted in the system's table, the handles of
/// this process with the type of each, for failure messages; on Windows
/// proper, which cannot list them cheaply, nothing.
pub fn what_is_open() -> String {
    if !counts_in_system_table() {
        return String::new();
    }
    let listed: Vec<String> = handles_in_system_table()
        .unwrap_or_else(|why| panic!("{why}"))
        .into_iter()
        .map(|handle| format!("{handle:#x} {}", type_of(handle)))
        .collect();
    format!("; open now: {listed:?}")
}

/// Makes, before a count, what Windows makes on first use and keeps:
/// Winsock's start and first socket, once per process; under Wine, an
/// event per thread, made by the thread's first `bind`, `connect`,
/// `accept`, send or receive (`ws2_32`'s `get_sync_event`) and closed only
/// when the thread ends; and under Wine, the handle to the `\\.\Nsi`
/// device that the first read of the connections' table opens
/// (`GetExtendedTcpTable`, as the handover's peer check reads it) and
/// keeps until the process ends.
pub fn warm_up() {
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        GetExtendedTcpTable, TCP_TABLE_OWNER_PID_CONNECTIONS,
    };
    use windows_sys::Win32::Networking::WinSock::AF_INET;
    drop(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket to loopback"));
    let mut size = 0u32;
    // SAFETY: no buffer, of the size 0 given: the call only says the size
    // it needs (having read the table).
    unsafe {
        GetExtendedTcpTable(
            std::ptr::null_mut(),
            &raw mut size,
            0,
            u32::from(AF_INET),
            TCP_TABLE_OWNER_PID_CONNECTIONS,
            0,
        )
    };
}

/// How many handles this process has open.
///
/// # Panics
///
/// Where it cannot be counted: `GetProcessHandleCount` fails, or says 0
/// (a process always has handles open) and the system's handle table can
/// be read neither, or lists none of this process's. A check that cannot
/// count fails rather than passes.
#[must_use]
pub fn handle_count() -> u32 {
    match process_handle_count() {
        0 => {
            let mine = handles_in_system_table().unwrap_or_else(|why| panic!("{why}"));
            assert!(
                !mine.is_empty(),
                "cannot count this process's handles: GetProcessHandleCount says 0, and the \
                 system's handle table lists none of pid {}'s",
                std::process::id()
            );
            mine.len() as u32
        }
        count => count,
    }
}

/// `GetProcessHandleCount`: 0 under Wine 8, whose call is a stub.
fn process_handle_count() -> u32 {
    let mut count = 0;
    // SAFETY: the current-process pseudo-handle and a writable u32.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &raw mut count) };
    assert_ne!(
        ok,
        0,
        "cannot count this process's handles: GetProcessHandleCount: {}",
        std::io::Error::last_os_error()
    );
    count
}

/// `SystemExtendedHandleInformation` (class 64 of
/// `NtQuerySystemInformation`), which windows-sys does not name.
const SYSTEM_EXTENDED_HANDLE_INFORMATION: i32 = 64;

/// `SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX`, one handle of the system's table:
/// its object's address, its owner's pid, its value, its access, a
/// back-trace index, its object's type, its attributes.
#[repr(C)]
struct HandleEntry {
    _object: *mut c_void,
    unique_process_id: usize,
    handle_value: usize,
    _granted_access: u32,
    _creator_back_trace_index: u16,
    _object_type_index: u16,
    _handle_attributes: u32,
    _reserved: u32,
}

/// `SYSTEM_HANDLE_INFORMATION_EX`'s head: how many entries follow it.
#[repr(C)]
struct HandleTableHead {
    number_of_handles: usize,
    _reserved: usize,
}

/// The values of this process's handles in the system's handle table
/// (`NtQuerySystemInformation(SystemExtendedHandleInformation)`), or why
/// it cannot be read.
fn handles_in_system_table() -> Result<Vec<usize>, String> {
    const STATUS_INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;
    let me = std::process::id() as usize;
    // In u64s, for the alignment of the entries' pointer-sized fields.
    let mut table: Vec<u64> = vec![0; 1 << 14];
    loop {
        let bytes = u32::try_from(table.len() * size_of::<u64>()).map_err(|_| {
            "cannot count this process's handles: the system's handle table is over 4 GiB"
                .to_owned()
        })?;
        let mut needed = 0u32;
        // SAFETY: `table` is writable for `bytes` bytes, and aligned for
        // the pointer-sized fields the call writes.
        let status = unsafe {
            NtQuerySystemInformation(
                SYSTEM_EXTENDED_HANDLE_INFORMATION,
                table.as_mut_ptr().cast(),
                bytes,
                &raw mut needed,
            )
        };
        if status == STATUS_INFO_LENGTH_MISMATCH {
            let wanted = (needed as usize)
                .div_ceil(size_of::<u64>())
                .max(table.len() * 2);
            table.resize(wanted, 0);
            continue;
        }
        if status != 0 {
            return Err(format!(
                "cannot count this process's handles: GetProcessHandleCount says 0, and \
                 NtQuerySystemInformation(SystemExtendedHandleInformation) fails with NTSTATUS \
                 {status:#x}"
            ));
        }
        // SAFETY: the call wrote the head, and then as many entries as it
        // says, within `bytes` (checked below); `table` is aligned for both.
        let head = unsafe { &*table.as_ptr().cast::<HandleTableHead>() };
        let count = head.number_of_handles;
        let fits = (bytes as usize - size_of::<HandleTableHead>()) / size_of::<HandleEntry>();
        if count > fits {
            return Err(format!(
                "cannot count this process's handles: the system's handle table says {count} \
                 entries, where {fits} fit"
            ));
        }
        // SAFETY: `count` entries follow the head, within `table` (above).
        let entries = unsafe {
            std::slice::from_raw_parts(
                table
                    .as_ptr()
                    .cast::<u8>()
                    .add(size_of::<HandleTableHead>())
                    .cast::<HandleEntry>(),
                count,
            )
        };
        return Ok(entries
            .iter()
            .filter(|entry| entry.unique_process_id == me)
            .map(|entry| entry.handle_value)
            .collect());
    }
}

/// The type of the object of this process's handle `handle` ("Event",
/// "File", "Thread"...), as `NtQueryObject` names it, for failure messages.
fn type_of(handle: usize) -> String {
    // PUBLIC_OBJECT_TYPE_INFORMATION: a UNICODE_STRING, its name, and
    // reserved words; the name's characters follow in the buffer.
    let mut buffer: Vec<u64> = vec![0; 128];
    let bytes = (buffer.len() * size_of::<u64>()) as u32;
    let mut returned = 0u32;
    // SAFETY: a handle value of this process's table (closed meanwhile,
    // the call fails), and a writable, aligned buffer of `bytes` bytes.
    let status = unsafe {
        NtQueryObject(
            handle as HANDLE,
            ObjectTypeInformation,
            buffer.as_mut_ptr().cast(),
            bytes,
            &raw mut returned,
        )
    };
    if status != 0 {
        return format!("(type unknown: NTSTATUS {status:#x})");
    }
    // SAFETY: the call wrote the UNICODE_STRING at the buffer's start,
    // which is aligned for it.
    let name = unsafe { &*buffer.as_ptr().cast::<UNICODE_STRING>() };
    let length = usize::from(name.Length) / 2;
    let characters = name.Buffer.cast_const();
    let within = buffer.as_ptr_range();
    // The characters lie within the buffer, where the call put them.
    if characters.cast::<u64>() < within.start
        || characters.wrapping_add(length).cast::<u64>() > within.end
    {
        return "(type unknown)".to_owned();
    }
    // SAFETY: `length` characters at `characters`, within `buffer` (above).
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(characters, length) })
}

/// Why the tests that need `AF_UNIX` sockets cannot run here, or `None`
/// where they can: a raw `WSASocketW(AF_UNIX, SOCK_STREAM)` fails with
/// `WSAEAFNOSUPPORT` before Windows 10 1803 and under Wine 8. Asked with
/// raw calls, not with the code under test.
#[must_use]
pub fn no_af_unix() -> Option<String> {
    use windows_sys::Win32::Networking::WinSock::{
        closesocket, WSAGetLastError, WSASocketW, WSAStartup, AF_UNIX, INVALID_SOCKET, SOCK_STREAM,
        WSADATA, WSAEAFNOSUPPORT,
    };
    // SAFETY: WSADATA is plain data, filled by the call; the start is
    // never undone, as std does.
    let started = unsafe {
        let mut data: WSADATA = std::mem::zeroed();
        WSAStartup(0x0202, &raw mut data)
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
#[must_use]
pub fn skip_without_af_unix(test: &str) -> bool {
    let Some(why) = no_af_unix() else {
        return false;
    };
    crate::skipped(test, &why);
    true
}

/// Whether a test of what happens where Windows has no `AF_UNIX` must be
/// skipped here, where it has: if so, says so ([`skipped`](crate::skipped)).
#[must_use]
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
    assert!(
        text.len() < 108,
        "{} is too long for sun_path",
        path.display()
    );
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
    assert_eq!(bound, 0, "bind {}: Winsock error {error}", path.display());
    // Not `exists`, which follows the reparse point the file is.
    assert!(
        std::fs::symlink_metadata(path).is_ok(),
        "no socket file at {} after bind",
        path.display()
    );
}
