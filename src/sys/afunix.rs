//! Windows: `AF_UNIX` stream sockets (`afunix.h`, Windows 10 1803 and
//! later), which std has only on Unix, and the socket files they leave.
//!
//! A socket bound to a path leaves a file there, a reparse point tagged
//! `IO_REPARSE_TAG_AF_UNIX`, which nothing removes when the socket closes.
//! Such a file is looked at and removed through one handle opened on the
//! entry itself (`FILE_FLAG_OPEN_REPARSE_POINT`), so that what was checked
//! is what is removed; and removed, on request, when a console's Ctrl+C
//! ends the process.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::mem::{offset_of, size_of, zeroed};
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{
    AsRawHandle, AsRawSocket, AsSocket, BorrowedSocket, FromRawHandle, FromRawSocket, OwnedHandle,
    OwnedSocket,
};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{
    SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Networking::WinSock::{
    accept, bind, connect, ioctlsocket, listen, select, setsockopt, WSASocketW, WSAStartup,
    AF_UNIX, FD_SET, FIONBIO, INVALID_SOCKET, SOCKADDR, SOCKADDR_UN, SOCKET_ERROR, SOCK_STREAM,
    SOL_SOCKET, SO_ERROR, SO_RCVTIMEO, SO_SNDTIMEO, TIMEVAL, WSADATA, WSAEAFNOSUPPORT,
    WSAEWOULDBLOCK, WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FileAttributeTagInfo, FileDispositionInfo, GetFileInformationByHandle,
    GetFileInformationByHandleEx, SetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION, DELETE,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_TAG_INFO, FILE_DISPOSITION_INFO,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;

use super::windows::{af_unix_peer_pid, int_option, raw, recv, send_vectored, wsa_error};

/// The tag of a socket file's reparse point: `IO_REPARSE_TAG_AF_UNIX`
/// (`0x80000023L` in winnt.h), defined here rather than pulling in
/// windows-sys's `Win32_System_SystemServices` for one constant.
const IO_REPARSE_TAG_AF_UNIX: u32 = 0x8000_0023;

/// The size of `sun_path` (`UNIX_PATH_MAX` in afunix.h).
pub(crate) const SUN_PATH: usize = size_of::<SOCKADDR_UN>() - offset_of!(SOCKADDR_UN, sun_path);

/// The longest path, in bytes of UTF-8, that fits in `sun_path` with its
/// closing NUL.
pub(crate) const MAX_UNIX_PATH: usize = SUN_PATH - 1;

/// The address of the socket at `path`, and the length to give `bind` and
/// `connect` with it: `sun_family`, the path and its closing NUL. Winsock
/// reads `sun_path` as UTF-8.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for an empty path, one that is not UTF-8 or
/// holds a NUL, and one longer than [`MAX_UNIX_PATH`] bytes.
pub(crate) fn unix_address(path: &Path) -> io::Result<(SOCKADDR_UN, i32)> {
    let invalid = |why: String| io::Error::new(ErrorKind::InvalidInput, why);
    let text = path.to_str().ok_or_else(|| {
        invalid(format!(
            "{}: an AF_UNIX socket's path is UTF-8 on Windows, and this one is not",
            path.display()
        ))
    })?;
    if text.is_empty() {
        return Err(invalid("the socket path is empty".into()));
    }
    if text.contains('\0') {
        return Err(invalid(format!("{text:?}: a socket path holds no NUL")));
    }
    if text.len() > MAX_UNIX_PATH {
        return Err(invalid(format!(
            "the path is {} bytes long, and an AF_UNIX socket's path can have at most {MAX_UNIX_PATH} (sun_path holds {SUN_PATH} bytes, with the closing NUL): use a shorter path (a relative one counts from the current directory)",
            text.len()
        )));
    }
    let mut address = SOCKADDR_UN {
        sun_family: AF_UNIX,
        sun_path: [0; SUN_PATH],
    };
    for (slot, &byte) in address.sun_path.iter_mut().zip(text.as_bytes()) {
        *slot = byte as i8;
    }
    let len = offset_of!(SOCKADDR_UN, sun_path) + text.len() + 1;
    Ok((address, len as i32))
}

/// The error of a Windows without `AF_UNIX`.
fn no_af_unix() -> io::Error {
    io::Error::new(
        ErrorKind::Unsupported,
        "this Windows has no AF_UNIX sockets (Windows 10 1803 and later have them): give the holder's address as tcp:127.0.0.1:PORT",
    )
}

/// Starts Winsock for this process once (`WSAStartup`, version 2.2): std
/// does so only when its own networking is first used.
fn startup() -> io::Result<()> {
    static STARTED: OnceLock<i32> = OnceLock::new();
    let code = *STARTED.get_or_init(|| {
        // SAFETY: WSADATA is plain data; the call fills it.
        let mut data: WSADATA = unsafe { zeroed() };
        // SAFETY: `data` is writable; the call's count is never undone
        // (no WSACleanup), as std does.
        unsafe { WSAStartup(0x0202, &raw mut data) }
    });
    match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

/// A new `AF_UNIX` stream socket, not inheritable.
///
/// # Errors
///
/// [`ErrorKind::Unsupported`] where Windows has no `AF_UNIX`
/// (`WSAEAFNOSUPPORT`: before Windows 10 1803, and under Wine 8).
fn unix_socket() -> io::Result<OwnedSocket> {
    startup()?;
    // SAFETY: no protocol info; a failed call returns INVALID_SOCKET.
    let socket = unsafe {
        WSASocketW(
            i32::from(AF_UNIX),
            SOCK_STREAM,
            0,
            ptr::null(),
            0,
            WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT,
        )
    };
    if socket == INVALID_SOCKET {
        let err = wsa_error();
        if err.raw_os_error() == Some(WSAEAFNOSUPPORT) {
            return Err(no_af_unix());
        }
        return Err(err);
    }
    // SAFETY: a new socket that only this value owns.
    Ok(unsafe { OwnedSocket::from_raw_socket(socket as _) })
}

/// Makes `socket` blocking or not (`ioctlsocket(FIONBIO)`).
fn set_nonblocking(socket: BorrowedSocket<'_>, on: bool) -> io::Result<()> {
    let mut value = u32::from(on);
    // SAFETY: `value` is a writable u32, as FIONBIO takes.
    if unsafe { ioctlsocket(raw(socket), FIONBIO, &raw mut value) } == SOCKET_ERROR {
        return Err(wsa_error());
    }
    Ok(())
}

/// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO`: milliseconds, rounded up, so that
/// a bound of less than one still bounds.
fn set_timeout(socket: BorrowedSocket<'_>, option: i32, timeout: Duration) -> io::Result<()> {
    if timeout.is_zero() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "a socket's timeout cannot be zero",
        ));
    }
    let ms = timeout
        .as_micros()
        .div_ceil(1000)
        .min(u128::from(u32::MAX - 1)) as u32;
    // SAFETY: `ms` is a readable u32 of the size given, as the option takes.
    let result = unsafe {
        setsockopt(
            raw(socket),
            SOL_SOCKET,
            option,
            ptr::from_ref(&ms).cast(),
            size_of::<u32>() as i32,
        )
    };
    match result {
        SOCKET_ERROR => Err(wsa_error()),
        _ => Ok(()),
    }
}

/// Waits at most `timeout` for a non-blocking connect to end (`select`,
/// which unlike `WSAPoll` before Windows 10 2004 reports a failed one).
fn wait_connected(socket: BorrowedSocket<'_>, timeout: Duration) -> io::Result<()> {
    let mut writable = FD_SET {
        fd_count: 1,
        fd_array: [0; 64],
    };
    writable.fd_array[0] = raw(socket);
    let mut failed = writable;
    let bound = TIMEVAL {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as i32,
        tv_usec: timeout.subsec_micros() as i32,
    };
    // SAFETY: two valid FD_SETs of one socket each and a TIMEVAL, alive
    // for the call; the first argument is ignored on Windows.
    match unsafe {
        select(
            1,
            ptr::null_mut(),
            &raw mut writable,
            &raw mut failed,
            &raw const bound,
        )
    } {
        SOCKET_ERROR => Err(wsa_error()),
        0 => Err(io::Error::from(ErrorKind::TimedOut)),
        _ => match int_option(socket, SO_ERROR)? {
            0 => Ok(()),
            code => Err(io::Error::from_raw_os_error(code)),
        },
    }
}

/// A connected `AF_UNIX` stream socket: blocking, not inheritable.
#[derive(Debug)]
pub(crate) struct UnixStream(OwnedSocket);

impl UnixStream {
    /// Connects to the socket at `path`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`unix_address`]; [`ErrorKind::Unsupported`] where Windows has no
    /// `AF_UNIX`; [`ErrorKind::TimedOut`] past `timeout`; and the error of
    /// `connect` (`ConnectionRefused` where nothing listens).
    pub(crate) fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
        let (address, len) = unix_address(path)?;
        let socket = unix_socket()?;
        set_nonblocking(socket.as_socket(), true)?;
        // SAFETY: `address` is a SOCKADDR_UN of which `len` bytes are
        // given; it is alive for the call.
        let result = unsafe {
            connect(
                raw(socket.as_socket()),
                ptr::from_ref(&address).cast::<SOCKADDR>(),
                len,
            )
        };
        if result == SOCKET_ERROR {
            let err = wsa_error();
            if err.raw_os_error() != Some(WSAEWOULDBLOCK) {
                return Err(err);
            }
            wait_connected(socket.as_socket(), timeout)?;
        }
        set_nonblocking(socket.as_socket(), false)?;
        Ok(UnixStream(socket))
    }

    /// The process at the other end (`SIO_AF_UNIX_GETPEERPID`): the one
    /// that connected, or the one that listened.
    pub(crate) fn peer_pid(&self) -> io::Result<u32> {
        af_unix_peer_pid(self.0.as_socket())
    }

    /// Bounds each receive (`SO_RCVTIMEO`).
    pub(crate) fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        set_timeout(self.0.as_socket(), SO_RCVTIMEO, timeout)
    }

    /// Bounds each send (`SO_SNDTIMEO`).
    pub(crate) fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        set_timeout(self.0.as_socket(), SO_SNDTIMEO, timeout)
    }
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.0.as_socket(), buf)
    }
}

impl Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_vectored(self.0.as_socket(), &[IoSlice::new(buf)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening `AF_UNIX` stream socket: blocking, not inheritable.
#[derive(Debug)]
pub(crate) struct UnixListener(OwnedSocket);

impl UnixListener {
    /// Binds a socket at `path`, which makes the socket file there, and
    /// listens.
    ///
    /// # Errors
    ///
    /// As [`unix_address`]; [`ErrorKind::Unsupported`] where Windows has no
    /// `AF_UNIX`; [`ErrorKind::AddrInUse`] where something is at the path
    /// already; and the error of `bind` or `listen`.
    pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
        let (address, len) = unix_address(path)?;
        let socket = unix_socket()?;
        // SAFETY: `address` is a SOCKADDR_UN of which `len` bytes are
        // given; it is alive for the call.
        let bound = unsafe {
            bind(
                raw(socket.as_socket()),
                ptr::from_ref(&address).cast::<SOCKADDR>(),
                len,
            )
        };
        if bound == SOCKET_ERROR {
            return Err(wsa_error());
        }
        // SAFETY: a bound socket; 128 is std's backlog.
        if unsafe { listen(raw(socket.as_socket()), 128) } == SOCKET_ERROR {
            return Err(wsa_error());
        }
        Ok(UnixListener(socket))
    }

    /// The next connection, blocking, not inheritable.
    pub(crate) fn accept(&self) -> io::Result<UnixStream> {
        // SAFETY: no address is asked for; a failed call returns
        // INVALID_SOCKET.
        let socket = unsafe { accept(raw(self.0.as_socket()), ptr::null_mut(), ptr::null_mut()) };
        if socket == INVALID_SOCKET {
            return Err(wsa_error());
        }
        // SAFETY: a new socket that only this value owns.
        let socket = unsafe { OwnedSocket::from_raw_socket(socket as _) };
        // An accepted socket may inherit its listener's inheritability, or
        // not (Wine makes it inheritable): it is made not so here.
        // SAFETY: a live socket is a handle to SetHandleInformation.
        if unsafe { SetHandleInformation(socket.as_raw_socket() as HANDLE, HANDLE_FLAG_INHERIT, 0) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(UnixStream(socket))
    }
}

/// A file's identity: its volume's serial number and its index there.
pub(crate) type FileId = (u32, u64);

/// What is at a socket's path, opened on the entry itself.
struct Entry(OwnedHandle);

impl Entry {
    /// Opens the entry at `path` (not what a reparse point there names),
    /// with the right to delete it; `None` where there is nothing.
    fn open(path: &Path) -> io::Result<Option<Entry>> {
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        // SAFETY: a NUL-terminated wide path, alive for the call; no
        // security attributes or template; a failed call returns
        // INVALID_HANDLE_VALUE.
        let handle = unsafe {
            CreateFileW(
                wide.as_ptr(),
                DELETE | FILE_READ_ATTRIBUTES,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS,
                ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            let err = io::Error::last_os_error();
            return match err.kind() {
                ErrorKind::NotFound => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: a new handle that only this value owns.
        Ok(Some(Entry(unsafe { OwnedHandle::from_raw_handle(handle) })))
    }

    /// Whether it is a socket file: a reparse point tagged
    /// `IO_REPARSE_TAG_AF_UNIX`.
    fn is_socket(&self) -> io::Result<bool> {
        let mut info = FILE_ATTRIBUTE_TAG_INFO {
            FileAttributes: 0,
            ReparseTag: 0,
        };
        // SAFETY: `info` is writable for the size given, of the class asked.
        let ok = unsafe {
            GetFileInformationByHandleEx(
                self.0.as_raw_handle(),
                FileAttributeTagInfo,
                ptr::from_mut(&mut info).cast(),
                size_of::<FILE_ATTRIBUTE_TAG_INFO>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT != 0
            && info.ReparseTag == IO_REPARSE_TAG_AF_UNIX)
    }

    /// Its identity.
    fn id(&self) -> io::Result<FileId> {
        // SAFETY: plain data; all-zero is a valid value.
        let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { zeroed() };
        // SAFETY: `info` is writable and of the type the call fills.
        if unsafe { GetFileInformationByHandle(self.0.as_raw_handle(), &raw mut info) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
        Ok((info.dwVolumeSerialNumber, index))
    }

    /// Removes it, once the last handle to it closes (this one).
    fn delete(&self) -> io::Result<()> {
        let info = FILE_DISPOSITION_INFO { DeleteFile: true };
        // SAFETY: `info` is readable for the size given, of the class set;
        // the handle was opened with DELETE.
        let ok = unsafe {
            SetFileInformationByHandle(
                self.0.as_raw_handle(),
                FileDispositionInfo,
                ptr::from_ref(&info).cast(),
                size_of::<FILE_DISPOSITION_INFO>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What is at a socket's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtPath {
    /// Nothing.
    Nothing,
    /// A socket file, with its identity.
    Socket(FileId),
    /// Anything else: a file, a directory, a link.
    Other,
}

/// What is at `path`, looked at without following a link.
pub(crate) fn at_path(path: &Path) -> io::Result<AtPath> {
    let Some(entry) = Entry::open(path)? else {
        return Ok(AtPath::Nothing);
    };
    if entry.is_socket()? {
        Ok(AtPath::Socket(entry.id()?))
    } else {
        Ok(AtPath::Other)
    }
}

/// Removes the socket file at `path` if it is still the one `id` names:
/// looked at and removed through one handle. Whether it was.
pub(crate) fn remove_socket_file(path: &Path, id: FileId) -> io::Result<bool> {
    let Some(entry) = Entry::open(path)? else {
        return Ok(false);
    };
    if !entry.is_socket()? || entry.id()? != id {
        return Ok(false);
    }
    entry.delete()?;
    Ok(true)
}

/// The socket files a console event removes before it ends the process.
static REMOVED_ON_CONSOLE_EXIT: Mutex<Vec<(PathBuf, FileId)>> = Mutex::new(Vec::new());

/// Has a console's Ctrl+C, Ctrl+Break or closing remove the socket file at
/// `path`, while it is still the one `id` names, and then end this process
/// with exit status 0 (`SetConsoleCtrlHandler`).
pub(crate) fn remove_on_console_exit(path: &Path, id: FileId) -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        // SAFETY: a handler that stays valid for the life of the process.
        if unsafe { SetConsoleCtrlHandler(Some(on_console_exit), 1) } == 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        }
    });
    installed.map_err(io::Error::from_raw_os_error)?;
    REMOVED_ON_CONSOLE_EXIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((path.to_owned(), id));
    Ok(())
}

/// The handler of [`remove_on_console_exit`], on a thread of its own.
unsafe extern "system" fn on_console_exit(_event: u32) -> BOOL {
    let files = REMOVED_ON_CONSOLE_EXIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (path, id) in files.iter() {
        let _ = remove_socket_file(path, *id);
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of `unix_address` for `path`.
    fn refused(path: &str) -> io::Error {
        match unix_address(Path::new(path)) {
            Ok(_) => panic!("{path:?} was taken"),
            Err(err) => err,
        }
    }

    #[test]
    fn an_address_is_the_path_and_its_nul() {
        let (address, len) = unix_address(Path::new("C:\\run\\h.sock")).unwrap();
        assert_eq!(address.sun_family, AF_UNIX);
        // sun_family (2 bytes), the 13 bytes of the path, its NUL.
        assert_eq!(len, 2 + 13 + 1);
        let path: Vec<u8> = address.sun_path[..14].iter().map(|&b| b as u8).collect();
        assert_eq!(path, b"C:\\run\\h.sock\0");
        assert!(address.sun_path[13..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_path_too_long_for_sun_path_is_invalid_input() {
        assert_eq!(SUN_PATH, 108);
        let longest = "a".repeat(MAX_UNIX_PATH);
        let (_, len) = unix_address(Path::new(&longest)).unwrap();
        assert_eq!(len as usize, size_of::<SOCKADDR_UN>());
        let err = refused(&"a".repeat(SUN_PATH));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at most 107"), "{err}");
        // Counted in bytes of UTF-8: 54 two-byte letters are 108 bytes.
        let err = refused(&"é".repeat(54));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn an_empty_path_or_one_with_a_nul_is_invalid_input() {
        for bad in ["", "a\0b"] {
            let err = refused(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
