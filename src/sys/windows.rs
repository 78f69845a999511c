//! Windows: handles move between processes by `DuplicateHandle`, and the
//! records that tell the receiver what to duplicate travel over a stream
//! socket.

use std::io::{self, ErrorKind, IoSlice};
use std::mem::{size_of, zeroed};
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsRawSocket, BorrowedHandle, BorrowedSocket, FromRawHandle,
    FromRawSocket, OwnedHandle, OwnedSocket, RawHandle,
};
use std::ptr;
use std::time::Duration;

use std::net::SocketAddr;

use crate::record::HandleValue;

use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{
    DuplicateHandle, GetLastError, LocalFree, DUPLICATE_CLOSE_SOURCE, DUPLICATE_SAME_ACCESS,
    ERROR_ACCESS_DENIED, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_FILES, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID,
    TCP_TABLE_OWNER_PID_CONNECTIONS,
};
use windows_sys::Win32::Networking::WinSock::{
    getpeername, getsockname, getsockopt, recv as ws_recv, WSADuplicateSocketW, WSAGetLastError,
    WSAIoctl, WSAPoll, WSASend, WSASocketW, AF_INET, AF_INET6, FROM_PROTOCOL_INFO, INVALID_SOCKET,
    POLLRDNORM, POLLWRNORM, SIO_AF_UNIX_GETPEERPID, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6,
    SOCKADDR_STORAGE, SOCKET, SOCKET_ERROR, SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET, SO_ACCEPTCONN,
    SO_TYPE, WSABUF, WSAPOLLFD, WSAPROTOCOL_INFOW, WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED,
};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::Cryptography::{
    BCryptGenRandom, BCRYPT_USE_SYSTEM_PREFERRED_RNG,
};
use windows_sys::Win32::Security::{GetTokenInformation, TokenUser, PSID, TOKEN_QUERY, TOKEN_USER};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    QueryInformationJobObject, TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentProcessId, OpenProcess, OpenProcessToken, OpenThread,
    ResumeThread, WaitForSingleObject, CREATE_SUSPENDED, PROCESS_DUP_HANDLE,
    PROCESS_QUERY_LIMITED_INFORMATION, THREAD_SUSPEND_RESUME,
};

/// The last Winsock error, read right after the failed call.
pub(super) fn wsa_error() -> io::Error {
    // SAFETY: WSAGetLastError only reads this thread's last Winsock error.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

pub(super) fn raw(socket: BorrowedSocket<'_>) -> SOCKET {
    socket.as_raw_socket() as SOCKET
}

/// Waits until `socket` is ready for `events` (`POLLRDNORM`/`POLLWRNORM`).
pub(crate) fn wait(socket: BorrowedSocket<'_>, events: i16) -> io::Result<()> {
    let mut poll = WSAPOLLFD {
        fd: raw(socket),
        events,
        revents: 0,
    };
    // SAFETY: one valid WSAPOLLFD, alive for the call.
    match unsafe { WSAPoll(&raw mut poll, 1, -1) } {
        SOCKET_ERROR => Err(wsa_error()),
        _ => Ok(()),
    }
}

/// Waits up to `timeout` until `socket` is ready for `events`: whether it
/// is.
pub(crate) fn wait_for(
    socket: BorrowedSocket<'_>,
    events: i16,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    let mut poll = WSAPOLLFD {
        fd: raw(socket),
        events,
        revents: 0,
    };
    // Rounded up, so that a wait of less than a millisecond still waits.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid WSAPOLLFD, alive for the call.
    match unsafe { WSAPoll(&raw mut poll, 1, ms) } {
        SOCKET_ERROR => Err(wsa_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// What [`wait`] waits for.
pub(crate) const READABLE: i16 = POLLRDNORM;
pub(crate) const WRITABLE: i16 = POLLWRNORM;

/// One `WSASend` of `parts`, gathered: how many bytes it took. A
/// non-blocking socket with no room is `WouldBlock`; an interrupted call
/// is retried.
pub(crate) fn send_vectored(
    socket: BorrowedSocket<'_>,
    parts: &[IoSlice<'_>],
) -> io::Result<usize> {
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    loop {
        let mut sent = 0u32;
        // SAFETY: std guarantees that IoSlice has the layout of WSABUF; the
        // buffers are valid for reads for the call; no overlapped I/O.
        let result = unsafe {
            WSASend(
                raw(socket),
                parts.as_ptr().cast::<WSABUF>(),
                count,
                &raw mut sent,
                0,
                ptr::null_mut(),
                None,
            )
        };
        if result != SOCKET_ERROR {
            return Ok(sent as usize);
        }
        let err = wsa_error();
        if err.kind() != ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One `recv` into `buf`: how many bytes came, 0 at the end of the
/// stream. A non-blocking socket with nothing to read is `WouldBlock`; an
/// interrupted call is retried.
pub(crate) fn recv(socket: BorrowedSocket<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len().min(i32::MAX as usize) as i32;
    loop {
        // SAFETY: `buf` is valid for writes of `len` bytes for the call.
        match unsafe { ws_recv(raw(socket), buf.as_mut_ptr(), len, 0) } {
            SOCKET_ERROR => {
                let err = wsa_error();
                if err.kind() != ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            n => return Ok(n as usize),
        }
    }
}

/// This process's id.
pub(crate) fn current_pid() -> u32 {
    // SAFETY: no arguments; it cannot fail.
    unsafe { GetCurrentProcessId() }
}

/// `N` random bytes from the system's generator (`BCryptGenRandom`).
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    // SAFETY: `bytes` is writable for its length; no algorithm handle is
    // needed with BCRYPT_USE_SYSTEM_PREFERRED_RNG.
    let status = unsafe {
        BCryptGenRandom(
            ptr::null_mut(),
            bytes.as_mut_ptr(),
            N as u32,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    if status != 0 {
        return Err(io::Error::other(format!(
            "the system's random generator failed (NTSTATUS {status:#x})"
        )));
    }
    Ok(bytes)
}

/// Whether the process `process` has ended, without waiting.
pub(crate) fn has_exited(process: BorrowedHandle<'_>) -> bool {
    // SAFETY: a live process handle; a zero timeout never blocks.
    unsafe { WaitForSingleObject(process.as_raw_handle(), 0) == 0 }
}

/// What a socket is, as a typed take checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketKind {
    pub(crate) socket_type: SocketType,
    /// Whether it listens (`SO_ACCEPTCONN`).
    pub(crate) listening: bool,
    /// Whether it is IPv4 or IPv6.
    pub(crate) inet: bool,
}

/// A socket's type (`SO_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketType {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Datagram,
    /// Another type.
    Other,
}

impl SocketKind {
    /// Whether this is an IPv4 or IPv6 stream: TCP.
    pub(crate) fn is_tcp(&self) -> bool {
        self.inet && self.socket_type == SocketType::Stream
    }

    /// Whether this is an IPv4 or IPv6 datagram socket: UDP.
    pub(crate) fn is_udp(&self) -> bool {
        self.inet && self.socket_type == SocketType::Datagram
    }

    /// Whether this is a listening TCP socket.
    pub(crate) fn is_tcp_listener(&self) -> bool {
        self.is_tcp() && self.listening
    }
}

/// One `int` socket option of `SOL_SOCKET`, read by `getsockopt`.
pub(super) fn int_option(socket: BorrowedSocket<'_>, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = size_of::<i32>() as i32;
    // SAFETY: `value` is writable for `len` bytes.
    let result = unsafe {
        getsockopt(
            raw(socket),
            SOL_SOCKET,
            name,
            ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    match result {
        SOCKET_ERROR => Err(wsa_error()),
        _ => Ok(value),
    }
}

/// What `socket` is: its type, whether it listens, its family.
pub(crate) fn socket_kind(socket: BorrowedSocket<'_>) -> io::Result<SocketKind> {
    let option = |name: i32| int_option(socket, name);
    let kind = option(SO_TYPE)?;
    Ok(SocketKind {
        socket_type: match kind {
            SOCK_STREAM => SocketType::Stream,
            SOCK_DGRAM => SocketType::Datagram,
            _ => SocketType::Other,
        },
        listening: option(SO_ACCEPTCONN)? != 0,
        inet: address(socket, getsockname).is_some(),
    })
}

/// A duplicate of `handle` in this process: same access, not inheritable.
pub(crate) fn duplicate(handle: BorrowedHandle<'_>) -> io::Result<OwnedHandle> {
    let mut dup: HANDLE = ptr::null_mut();
    // SAFETY: `handle` is a live handle of this process; the pseudo-handle
    // of the current process needs no closing; `dup` receives a new handle
    // that this function then owns.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            handle.as_raw_handle(),
            GetCurrentProcess(),
            &raw mut dup,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: DuplicateHandle succeeded: `dup` is a new handle owned by no
    // one else.
    Ok(unsafe { OwnedHandle::from_raw_handle(dup) })
}

/// A process handle with the right to duplicate handles out of it.
pub(crate) struct Process(OwnedHandle);

impl Process {
    /// Opens process `pid` with `PROCESS_DUP_HANDLE`.
    pub(crate) fn open(pid: u32) -> io::Result<Process> {
        // SAFETY: OpenProcess takes no pointers; a null result is an error.
        let handle = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
        if handle.is_null() {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(code) if code == ERROR_ACCESS_DENIED as i32 => io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "OpenProcess of the sender (pid {pid}) was denied: this process lacks \
                         the PROCESS_DUP_HANDLE right on it (run both as the same user, or at \
                         the same integrity level)"
                    ),
                ),
                _ => io::Error::new(
                    err.kind(),
                    format!("cannot open the sender (pid {pid}) to fetch its handle: {err}"),
                ),
            });
        }
        // SAFETY: a new process handle that only this value owns.
        Ok(Process(unsafe { OwnedHandle::from_raw_handle(handle) }))
    }

    /// Duplicates the handle `value` of this process into the calling one,
    /// same access, not inheritable; with `close_source`, the sender's copy
    /// is closed whether or not this succeeds.
    pub(crate) fn fetch(&self, value: HandleValue, close_source: bool) -> io::Result<OwnedHandle> {
        let value = value.get();
        let options = DUPLICATE_SAME_ACCESS
            | if close_source {
                DUPLICATE_CLOSE_SOURCE
            } else {
                0
            };
        let mut dup: HANDLE = ptr::null_mut();
        // SAFETY: the source process handle is live; `value` is only a
        // number to it, checked by the kernel; `dup` receives a new handle.
        let ok = unsafe {
            DuplicateHandle(
                self.0.as_raw_handle(),
                value as usize as RawHandle,
                GetCurrentProcess(),
                &raw mut dup,
                0,
                0,
                options,
            )
        };
        if ok == 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "the peer sent handle value {value:#x}, which its process does not have: {err}"
                ),
            ));
        }
        // SAFETY: DuplicateHandle succeeded: a new handle of this process.
        Ok(unsafe { OwnedHandle::from_raw_handle(dup) })
    }

    /// Closes the sender's handle `value` without taking it.
    pub(crate) fn close(&self, value: HandleValue) {
        let value = value.get();
        // SAFETY: with a null target, DuplicateHandle only closes the source
        // handle in the source process (DUPLICATE_CLOSE_SOURCE).
        unsafe {
            DuplicateHandle(
                self.0.as_raw_handle(),
                value as usize as RawHandle,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                0,
                DUPLICATE_CLOSE_SOURCE,
            );
        }
    }
}

/// The pid of the process at the other end of `socket`, where Windows can
/// tell: `SIO_AF_UNIX_GETPEERPID` on an `AF_UNIX` socket; for TCP, the owner
/// of the peer's end of the connection in the machine's connection table
/// (`GetExtendedTcpTable`), which lists it only when the peer is on this
/// machine. `None` where it cannot tell.
pub(crate) fn peer_pid(socket: BorrowedSocket<'_>) -> Option<u32> {
    if let Some(pid) = unix_peer_pid(socket) {
        return Some(pid);
    }
    // Under Wine the connections' table leaves out a connection whose peer
    // has shut down its side for writing (as a client of systemfd's
    // protocol does at once): such a peer is one Windows cannot name here.
    let owner = tcp_owner(address(socket, getsockname)?, address(socket, getpeername)?)?;
    // The table says 0 where it does not know the owner.
    (owner != 0).then_some(owner)
}

/// [`peer_pid`], given up after `bound`: Wine reads the connection table
/// from the host's, in seconds or minutes when the host holds tens of
/// thousands of closed connections (as after a load test), and a server
/// must not keep a client waiting that long. The lookup goes on in a
/// thread of its own, which holds no handle.
pub(crate) fn peer_pid_within(socket: BorrowedSocket<'_>, bound: Duration) -> Option<u32> {
    if let Some(pid) = unix_peer_pid(socket) {
        return Some(pid);
    }
    let ends = (address(socket, getsockname)?, address(socket, getpeername)?);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .spawn(move || send.send(tcp_owner(ends.0, ends.1)))
        .ok()?;
    let owner = receive.recv_timeout(bound).ok().flatten()?;
    (owner != 0).then_some(owner)
}

fn unix_peer_pid(socket: BorrowedSocket<'_>) -> Option<u32> {
    af_unix_peer_pid(socket).ok()
}

/// The pid of the process at the other end of an `AF_UNIX` socket
/// (`SIO_AF_UNIX_GETPEERPID`, afunix.h): the one that connected, or the
/// one that listened.
pub(crate) fn af_unix_peer_pid(socket: BorrowedSocket<'_>) -> io::Result<u32> {
    let mut pid = 0u32;
    let mut returned = 0u32;
    // SAFETY: `pid` is a writable u32 of the size given; no overlapped I/O.
    let result = unsafe {
        WSAIoctl(
            raw(socket),
            SIO_AF_UNIX_GETPEERPID,
            ptr::null(),
            0,
            ptr::from_mut(&mut pid).cast(),
            size_of::<u32>() as u32,
            &raw mut returned,
            ptr::null_mut(),
            None,
        )
    };
    if result != 0 {
        return Err(wsa_error());
    }
    if returned as usize != size_of::<u32>() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("SIO_AF_UNIX_GETPEERPID returned {returned} bytes, not a pid's 4"),
        ));
    }
    Ok(pid)
}

/// The owner of the other end of the TCP connection between `here` (this
/// side) and `there`, from the connection table: the row whose local end
/// is `there` and whose remote end is `here`. 0 where the table does not know the owner;
/// `None` where the connection is not in the table.
fn tcp_owner(here: SocketAddr, there: SocketAddr) -> Option<u32> {
    let owner = match (here, there) {
        (SocketAddr::V4(here), SocketAddr::V4(there)) => {
            find_connection(AF_INET, |row: &MIB_TCPROW_OWNER_PID| {
                (row.dwLocalAddr.to_ne_bytes(), port(row.dwLocalPort))
                    == (there.ip().octets(), there.port())
                    && (row.dwRemoteAddr.to_ne_bytes(), port(row.dwRemotePort))
                        == (here.ip().octets(), here.port())
            })?
            .dwOwningPid
        }
        (SocketAddr::V6(here), SocketAddr::V6(there)) => {
            find_connection(AF_INET6, |row: &MIB_TCP6ROW_OWNER_PID| {
                (row.ucLocalAddr, port(row.dwLocalPort)) == (there.ip().octets(), there.port())
                    && (row.ucRemoteAddr, port(row.dwRemotePort))
                        == (here.ip().octets(), here.port())
            })?
            .dwOwningPid
        }
        _ => return None,
    };
    Some(owner)
}

/// A port as the connection table stores it: network order, in a u32.
fn port(stored: u32) -> u16 {
    u16::from_be(stored as u16)
}

/// One end of `socket`'s connection, read by `getsockname` or
/// `getpeername`; `None` for anything but IPv4 and IPv6.
fn address(
    socket: BorrowedSocket<'_>,
    get: unsafe extern "system" fn(SOCKET, *mut SOCKADDR, *mut i32) -> i32,
) -> Option<SocketAddr> {
    // SAFETY: SOCKADDR_STORAGE is plain data; all-zero is a valid value.
    let mut storage: SOCKADDR_STORAGE = unsafe { zeroed() };
    let mut len = size_of::<SOCKADDR_STORAGE>() as i32;
    // SAFETY: `storage` is writable for `len` bytes.
    if unsafe {
        get(
            raw(socket),
            ptr::from_mut(&mut storage).cast(),
            &raw mut len,
        )
    } != 0
    {
        return None;
    }
    match storage.ss_family {
        AF_INET => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN.
            let v4: SOCKADDR_IN = unsafe { std::mem::transmute_copy(&storage) };
            // SAFETY: every IN_ADDR is four bytes, whichever union field.
            let ip = unsafe { v4.sin_addr.S_un.S_addr }.to_ne_bytes();
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        AF_INET6 => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN6.
            let v6: SOCKADDR_IN6 = unsafe { std::mem::transmute_copy(&storage) };
            // SAFETY: every IN6_ADDR is sixteen bytes, whichever union field.
            let ip = unsafe { v6.sin6_addr.u.Byte };
            Some(SocketAddr::from((ip, u16::from_be(v6.sin6_port))))
        }
        _ => None,
    }
}

/// The first of the machine's TCP connections of `family` that `wanted`
/// picks, with its owner's pid: a row of a `MIB_TCPTABLE_OWNER_PID` or
/// `MIB_TCP6TABLE_OWNER_PID`.
fn find_connection<Row: Copy>(family: u16, wanted: impl Fn(&Row) -> bool) -> Option<Row> {
    let mut size = 0u32;
    let mut table: Vec<u64> = Vec::new();
    // The table may grow between asking its size and reading it: each
    // new buffer has room for a quarter more, as on a machine that opens
    // connections by the thousand.
    for _ in 0..8 {
        // SAFETY: `table` is writable for `size` bytes (none at first).
        let result = unsafe {
            GetExtendedTcpTable(
                table.as_mut_ptr().cast(),
                &raw mut size,
                0,
                u32::from(family),
                TCP_TABLE_OWNER_PID_CONNECTIONS,
                0,
            )
        };
        match result {
            0 => {
                let bytes = table.as_ptr().cast::<u8>();
                // SAFETY: the table starts with its row count, the rows
                // follow at offset 4 (their alignment), and the call wrote
                // that many rows within `size` bytes.
                return unsafe {
                    let count = bytes.cast::<u32>().read() as usize;
                    let rows = bytes.add(size_of::<u32>()).cast::<Row>();
                    (0..count)
                        .map(|i| rows.add(i).read_unaligned())
                        .find(|row| wanted(row))
                };
            }
            ERROR_INSUFFICIENT_BUFFER => {
                size += size / 4;
                table = vec![0; (size as usize).div_ceil(8)];
            }
            _ => return None,
        }
    }
    None
}

/// The local address of an IPv4 or IPv6 socket.
pub(crate) fn local_address(socket: BorrowedSocket<'_>) -> Option<SocketAddr> {
    address(socket, getsockname)
}

/// The size of the record `WSADuplicateSocketW` fills.
pub(crate) const PROTOCOL_INFO_LEN: usize = size_of::<WSAPROTOCOL_INFOW>();

/// Fills `info` with what process `pid` needs to open its own descriptor
/// of `socket` (`WSADuplicateSocketW`).
pub(crate) fn duplicate_socket(
    socket: BorrowedSocket<'_>,
    pid: u32,
) -> io::Result<[u8; PROTOCOL_INFO_LEN]> {
    // SAFETY: WSAPROTOCOL_INFOW is plain data; all-zero is a valid value.
    let mut info: WSAPROTOCOL_INFOW = unsafe { zeroed() };
    // SAFETY: `info` is writable and of the type the call fills.
    if unsafe { WSADuplicateSocketW(raw(socket), pid, &raw mut info) } == SOCKET_ERROR {
        return Err(wsa_error());
    }
    // SAFETY: plain data of exactly this size.
    Ok(unsafe { std::mem::transmute::<WSAPROTOCOL_INFOW, [u8; PROTOCOL_INFO_LEN]>(info) })
}

/// Opens this process's descriptor of a socket another process duplicated
/// for it; not inheritable.
pub(crate) fn socket_from_info(info: &[u8; PROTOCOL_INFO_LEN]) -> io::Result<OwnedSocket> {
    // SAFETY: any bytes form a WSAPROTOCOL_INFOW (plain integers and
    // arrays); Winsock validates the contents.
    let info: WSAPROTOCOL_INFOW = unsafe { std::mem::transmute_copy(info) };
    // SAFETY: `info` is alive for the call; a failed call returns
    // INVALID_SOCKET.
    let socket = unsafe {
        WSASocketW(
            FROM_PROTOCOL_INFO,
            FROM_PROTOCOL_INFO,
            FROM_PROTOCOL_INFO,
            &raw const info,
            0,
            WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT,
        )
    };
    if socket == INVALID_SOCKET {
        let err = wsa_error();
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("the socket the peer described cannot be opened: {err}"),
        ));
    }
    // SAFETY: a new socket that only this value owns.
    Ok(unsafe { OwnedSocket::from_raw_socket(socket as _) })
}

/// A process opened to ask about it (`PROCESS_QUERY_LIMITED_INFORMATION`).
fn open_to_query(pid: u32) -> io::Result<OwnedHandle> {
    // SAFETY: OpenProcess takes no pointers; a null result is an error.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("cannot open process {pid} to learn its user: {err}"),
        ));
    }
    // SAFETY: a new process handle that only this value owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// The user that process `pid` runs as: the SID of its token's user
/// (`OpenProcess`, `OpenProcessToken`, `GetTokenInformation(TokenUser)`),
/// in its string form, `S-1-5-21-…`.
pub(crate) fn process_user(pid: u32) -> io::Result<String> {
    let process = open_to_query(pid)?;
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: a live process handle; `token` receives a new handle.
    if unsafe { OpenProcessToken(process.as_raw_handle(), TOKEN_QUERY, &raw mut token) } == 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("cannot open the token of process {pid} to learn its user: {err}"),
        ));
    }
    // SAFETY: a new token handle that only this value owns.
    let token = unsafe { OwnedHandle::from_raw_handle(token) };
    // A TOKEN_USER is a SID pointer and attributes, followed by the SID
    // (at most 68 bytes); u64s keep the pointer aligned.
    let mut buffer = [0u64; 16];
    let mut len = 0u32;
    // SAFETY: `buffer` is writable for the size given.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buffer.as_mut_ptr().cast(),
            size_of_val(&buffer) as u32,
            &raw mut len,
        )
    };
    if ok == 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("cannot read the user of process {pid}: {err}"),
        ));
    }
    // SAFETY: the call filled a TOKEN_USER at the buffer's start.
    let user: TOKEN_USER = unsafe { buffer.as_ptr().cast::<TOKEN_USER>().read() };
    sid_string(user.User.Sid)
}

/// A SID in its string form (`ConvertSidToStringSidW`).
fn sid_string(sid: PSID) -> io::Result<String> {
    let mut text: PWSTR = ptr::null_mut();
    // SAFETY: `sid` points into a live TOKEN_USER; `text` receives a
    // LocalAlloc'd string, freed below.
    if unsafe { ConvertSidToStringSidW(sid, &raw mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a NUL-terminated wide string, read up to its NUL.
    let wide = unsafe {
        let mut len = 0;
        while *text.add(len) != 0 {
            len += 1;
        }
        std::slice::from_raw_parts(text, len)
    };
    let string = String::from_utf16_lossy(wide);
    // SAFETY: allocated by ConvertSidToStringSidW for the caller to free.
    unsafe { LocalFree(text.cast()) };
    Ok(string)
}

/// Whether process `pid` is running: it can be opened and has no exit code
/// yet.
pub(crate) fn process_alive(pid: u32) -> bool {
    match open_to_query(pid) {
        Ok(process) => !has_exited(process.as_handle()),
        // A process of another user may refuse to be opened: it exists.
        Err(err) => err.kind() == ErrorKind::PermissionDenied,
    }
}

/// A job object of this process's own (`CreateJobObjectW`): unnamed, its
/// handle not inheritable, with no limits, so that closing the handle ends
/// nothing. A process in it, and every process that one starts, stays in
/// it; a process in a job already is nested (Windows 8 and later).
#[derive(Debug)]
pub(crate) struct Job(OwnedHandle);

/// How often [`Job::end_all`] looks whether the processes it ended are
/// gone.
const JOB_POLL: Duration = Duration::from_millis(10);

impl Job {
    /// A new job, with no process in it.
    pub(crate) fn new() -> io::Result<Job> {
        // SAFETY: no security attributes (the handle is not inheritable)
        // and no name; the handle returned is this function's to own.
        let job = unsafe { CreateJobObjectW(ptr::null(), ptr::null()) };
        if job.is_null() {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create a job object: {e}"),
            ));
        }
        // SAFETY: a new handle owned by no one else.
        Ok(Job(unsafe { OwnedHandle::from_raw_handle(job) }))
    }

    /// Starts `command` in this job from its first instruction on: the
    /// process is created suspended (`CREATE_SUSPENDED`), put in the job
    /// (`AssignProcessToJobObject`), and only then let run, so that it can
    /// start no process outside the job. If it cannot be put in the job or
    /// let run, it is ended and waited for, having run nothing.
    pub(crate) fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> io::Result<std::process::Child> {
        use std::os::windows::process::CommandExt;
        let mut child = command.creation_flags(CREATE_SUSPENDED).spawn()?;
        let started = self
            .assign(child.as_handle())
            .and_then(|()| resume_threads(child.id()));
        if let Err(e) = started {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(child)
    }

    /// Puts `process` in this job.
    fn assign(&self, process: BorrowedHandle<'_>) -> io::Result<()> {
        // SAFETY: both are live handles of this process.
        let ok =
            unsafe { AssignProcessToJobObject(self.0.as_raw_handle(), process.as_raw_handle()) };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot put it in a job object of its own: {e} (a process already in a job \
                     is put in another only from Windows 8 on, and only if neither job sets UI \
                     limits)"
                ),
            ));
        }
        Ok(())
    }

    /// Ends every process in this job (`TerminateJobObject`, exit code
    /// 1), then waits, at most `bound`, until none is left.
    ///
    /// # Errors
    ///
    /// The error of ending them or of counting them;
    /// [`ErrorKind::TimedOut`] if some are left after `bound`.
    pub(crate) fn end_all(&self, bound: Duration) -> io::Result<()> {
        // SAFETY: a live job handle, created with every access right.
        if unsafe { TerminateJobObject(self.0.as_raw_handle(), 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = std::time::Instant::now() + bound;
        loop {
            let left = self.active_processes()?;
            if left == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("{left} processes of the job still ran {bound:?} after it was ended"),
                ));
            }
            std::thread::sleep(JOB_POLL);
        }
    }

    /// How many processes are in this job and running.
    fn active_processes(&self) -> io::Result<u32> {
        // SAFETY: an all-zero struct of integers is valid.
        let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { zeroed() };
        // SAFETY: `info` is writable for the size given; a live job handle.
        let ok = unsafe {
            QueryInformationJobObject(
                self.0.as_raw_handle(),
                JobObjectBasicAccountingInformation,
                ptr::from_mut(&mut info).cast(),
                size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.ActiveProcesses)
    }
}

/// Lets process `pid`, created suspended, run: resumes each of its
/// threads, found in a snapshot of the system's threads
/// (`CreateToolhelp32Snapshot`). A process created suspended has one
/// thread, its main one; std's `Child` keeps that thread's handle to
/// itself.
fn resume_threads(pid: u32) -> io::Result<()> {
    // SAFETY: no pointers; the process id is ignored for a thread snapshot.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snapshot == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new handle owned by no one else.
    let snapshot = unsafe { OwnedHandle::from_raw_handle(snapshot) };
    let mut entry = THREADENTRY32 {
        dwSize: size_of::<THREADENTRY32>() as u32,
        ..THREADENTRY32::default()
    };
    let mut resumed = 0;
    // SAFETY: a live snapshot handle; `entry` is writable, its size set.
    let mut more = unsafe { Thread32First(snapshot.as_raw_handle(), &raw mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            resume_thread(entry.th32ThreadID)?;
            resumed += 1;
        }
        // SAFETY: as above.
        more = unsafe { Thread32Next(snapshot.as_raw_handle(), &raw mut entry) } != 0;
    }
    // SAFETY: read right after the call that ended the walk.
    let error = unsafe { GetLastError() };
    if error != ERROR_NO_MORE_FILES {
        return Err(io::Error::from_raw_os_error(error as i32));
    }
    if resumed == 0 {
        return Err(io::Error::new(
            ErrorKind::NotFound,
            format!("no thread of process {pid} to let run was found"),
        ));
    }
    Ok(())
}

/// Resumes thread `id` once (`ResumeThread`).
fn resume_thread(id: u32) -> io::Result<()> {
    // SAFETY: no pointers; the handle returned is closed below.
    let thread = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, id) };
    if thread.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new handle owned by no one else.
    let thread = unsafe { OwnedHandle::from_raw_handle(thread) };
    // SAFETY: a live thread handle with THREAD_SUSPEND_RESUME.
    if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
