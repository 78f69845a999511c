//! Everything that touches the operating system, one file per OS family.
//!
//! The contract each backend file provides to the rest of the crate:
//!
//! Unix (`unix/`, one file per job; `unix/mod.rs` lists them):
//! - `MAX_FDS`: the most fds one send may carry.
//! - `send_fds(socket, data, fds) -> io::Result<usize>`: one `sendmsg`
//!   with `SCM_RIGHTS`; never raises `SIGPIPE`; retries `EINTR`.
//! - `recv_fds(socket, data, keep) -> io::Result<Received>`: one
//!   `recvmsg`; every fd arrives close-on-exec and is offered to `keep`;
//!   every fd not kept is closed; retries `EINTR`.
//! - `read_empty_message(socket) -> io::Result<bool>`: whether a receive
//!   that got nothing read an empty message rather than the end.
//! - `MAX_BURST`, and `send_burst(socket, fds) -> io::Result<usize>` /
//!   `recv_burst(socket, bytes, got, keep) -> io::Result<usize>`: up to
//!   `MAX_BURST` one-fd `IO::FDPass` messages, in one `sendmmsg`/`recvmmsg` where
//!   the OS has them (a loop elsewhere); the receive waits only for the
//!   first message and offers each message's fds to `keep(i, fd)`.
//! - `describe(fd) -> io::Result<FdKind>`: what an fd of this process is.
//! - `peer_credentials(socket)`, `peer_pidfd(socket)`, `own_pidfd_id()`,
//!   `refuse_fds(socket)`: who the peer or this process is; whether a
//!   socket takes fds (each `None`/`false` where the OS cannot tell).
//! - `recv_datagram(socket, buf) -> io::Result<Datagram>`: one datagram,
//!   non-blocking, with its sender's pid where the OS gives it (Linux's
//!   `SCM_CREDENTIALS`); every fd that came with it is closed.
//! - `connect_unix(address)`, `send_datagram(address, data, fds)`: sockets
//!   the crate makes itself, close-on-exec.
//! - `anonymous_file(name) -> io::Result<OwnedFd>`: a close-on-exec file
//!   no path names (a memfd, or an unlinked temporary file).
//! - `Launch::new(program, argv, env, fds, names)`, then `spawn()` (fork
//!   and exec, only async-signal-safe calls between them) or `exec()`: a
//!   program with `fds` at 3, 4, … and the `LISTEN_*` variables, in the
//!   process group `process_group(group)` sets; `wait_child`, `kill_child`,
//!   `kill_group_and_reap` for what `spawn` started.
//!
//! Another process's fds (`pidfd.rs` on Linux and Android, `no_pidfd.rs`,
//! which refuses each call with `Unsupported`, on the other Unixes):
//! - `pidfd_open(pid) -> io::Result<OwnedFd>`: a close-on-exec pidfd.
//! - `pidfd_getfd(pidfd, pid, fd) -> io::Result<OwnedFd>`: a close-on-exec
//!   copy of the process's fd `fd`.
//! - `pidfd_exited(pidfd)`, `pidfd_terminate(pidfd, pid)`: whether it has
//!   exited; `SIGTERM` to it.
//! - `process_fds(pidfd, pid) -> io::Result<Vec<(RawFd, FdKind)>>`: its
//!   fds, read while it is alive.
//!
//! Each error has the `ErrorKind` of what happened (`NotFound` for a
//! process or fd that is not there, `PermissionDenied`, `Unsupported`) and
//! a message that says how to put it right.
//!
//! Windows (`windows.rs`):
//! - `send_vectored(socket, parts)`: one gathered `WSASend`;
//!   `recv(socket, buf)`: one `recv`; each retries an interrupted call and
//!   gives `WouldBlock` as it comes; `wait(socket, READABLE | WRITABLE)`.
//!   How a record is kept whole is the portable code's business.
//! - `current_pid()`, `duplicate(handle)`: a non-inheritable duplicate in
//!   this process.
//! - `Job::new()`, a job object of this process's own; `job.spawn(command)`
//!   starts a `std::process::Command` in it before it runs an instruction;
//!   `job.end_all(bound)` ends every process in it and waits for them.
//! - `Process::open(pid)` with `PROCESS_DUP_HANDLE`, and on it
//!   `fetch(value, close_source)` and `close(value)`, of a
//!   `record::HandleValue`: only a value the record rules checked.
//! - `peer_pid(socket)` where Windows can tell it.
//! - `duplicate_socket(socket, pid)` / `socket_from_info(info)`.
//! - `af_unix_peer_pid(socket)`: `SIO_AF_UNIX_GETPEERPID`.
//!
//! Windows's `AF_UNIX` (`afunix.rs`, Windows 10 1803 and later):
//! - `unix_address(path)`: the `SOCKADDR_UN` and its length, a path too
//!   long for `sun_path` refused with `InvalidInput`.
//! - `UnixListener::bind(path)`, `accept()`; `UnixStream::connect(path,
//!   timeout)`, `peer_pid()`, read and write timeouts, `Read` and `Write`.
//!   Where Windows has no `AF_UNIX` (`WSAEAFNOSUPPORT`) each is
//!   `Unsupported`.
//! - `at_path(path)`: nothing, a socket file (with its identity) or
//!   something else; `remove_socket_file(path, id)`, only while it is
//!   still that file.
//! - `remove_on_console_exit(path, id)`: that removal on the console's
//!   Ctrl+C, Ctrl+Break or closing, then the process's exit.
//!
//! A port to another Unix changes only the `cfg` names set in `build.rs`
//! (and this file, where the OS lacks a mechanism altogether).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use self::unix::*;

#[cfg(unix)]
#[cfg_attr(fdpass_linux_kernel, path = "pidfd.rs")]
#[cfg_attr(not(fdpass_linux_kernel), path = "no_pidfd.rs")]
mod process;
#[cfg(unix)]
pub(crate) use self::process::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use self::windows::*;

#[cfg(windows)]
mod afunix;
#[cfg(windows)]
pub(crate) use self::afunix::*;

#[cfg(not(any(unix, windows)))]
compile_error!("io-fdpass supports Unix-like systems and Windows; this target is neither");
