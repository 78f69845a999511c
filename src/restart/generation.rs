//! The next generation as a process, the part of a restart that a port to
//! another OS family replaces: start it with its fds and a notify socket of
//! its own, see whether it has said `READY=1` or exited, and kill it.
//!
//! The contract the portable code in `restart.rs` relies on:
//! - `Starting::start(restart)`: the program of a [`Restart`] running,
//!   with its fds laid out for it and a way to say it is ready; under a
//!   service manager, which is told `RELOADING=1` first, the next
//!   generation keeps the manager's notify socket;
//! - `Starting::ended()`: an error once it has exited or the timeout has
//!   passed, else the time left;
//! - `Starting::take_ready()`: whether it has said it is ready, without
//!   waiting; `Starting::wait_ready(slice)`: the same, waiting up to
//!   `slice`; `Starting::socket()`: what an event loop waits on to know
//!   when to call `take_ready` again;
//! - `Starting::ready()`: the started process, which is left to run, once
//!   the service manager, if any, has been told that it is the service's
//!   main process (`MAINPID=`); an error leaves it a `Starting`;
//! - dropping a `Starting` that is not ready kills it, with whatever it
//!   forked, and reaps it; then a service manager hears `READY=1` alone:
//!   this process goes on as the main one.
//!
//! Every message to the service manager is a datagram sent without
//! waiting ([`notify::Notifier::send`]), so none of this blocks an async
//! caller beyond the `fork` and `exec`.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::Restart;
use crate::{activation, notify, sys};

/// A next generation started, not yet ready.
pub(super) struct Starting {
    notify: notify::Listener,
    /// The service manager, told that a reload began; `None` without one.
    manager: Option<notify::Handover>,
    pid: u32,
    deadline: Instant,
    timeout: Duration,
    /// Whether dropping it kills it: until it is ready.
    armed: bool,
}

impl Starting {
    /// Starts the program of `restart` with its arguments, variables and
    /// fds by the socket-activation convention, in a process group of its
    /// own, saying `READY=1` on a socket of this call's own: named by
    /// `NOTIFY_SOCKET`, or under a service manager (told `RELOADING=1`
    /// here) by [`notify::READY_SOCKET`], `NOTIFY_SOCKET` staying the
    /// manager's.
    pub(super) fn start(restart: &Restart) -> io::Result<Starting> {
        if let Some((key, _)) = restart
            .env
            .iter()
            .find(|(key, _)| key == "NOTIFY_SOCKET" || key == notify::READY_SOCKET)
        {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is the restart's own: the next generation says on it that it is ready",
                    key.to_string_lossy()
                ),
            ));
        }
        let notify = notify::Listener::new()?;
        let manager = notify::Handover::reloading()?;
        let pid = spawn(restart, &notify, manager.is_some()).inspect_err(|_| {
            if let Some(manager) = &manager {
                manager.stay();
            }
        })?;
        Ok(Starting {
            notify,
            manager,
            pid,
            deadline: Instant::now() + restart.timeout,
            timeout: restart.timeout,
            armed: true,
        })
    }

    /// An error once it has exited or the timeout has passed; else how long
    /// is left.
    pub(super) fn ended(&self) -> io::Result<Duration> {
        let pid = self.pid;
        if let Some(status) = sys::exit_status(pid)? {
            // Gone, whatever it said: this generation must serve on.
            let when = match self.take_ready() {
                Ok(true) => "right after it said it was ready",
                _ => "before it was ready",
            };
            return Err(io::Error::other(format!(
                "the next generation (pid {pid}) {status} {when}"
            )));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the next generation (pid {pid}) was not ready within {:?}; it was killed",
                    self.timeout
                ),
            ));
        }
        Ok(left)
    }

    /// Whether it has said `READY=1`, reading every message that has come
    /// and waiting for none. As in systemd, any process of this user that
    /// can reach the socket may say it;
    /// [`notify::Notification::pid`] would tell who did.
    pub(super) fn take_ready(&self) -> io::Result<bool> {
        while let Some(message) = self.notify.recv(Some(Duration::ZERO))? {
            if message.says_ready() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether it says `READY=1` within `slice`.
    pub(super) fn wait_ready(&self, slice: Duration) -> io::Result<bool> {
        Ok(self.notify.wait_ready(Some(slice))?.is_some())
    }

    /// The socket it says `READY=1` on, readable when a message has come.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(super) fn socket(&self) -> BorrowedFd<'_> {
        self.notify.as_fd()
    }

    /// It is ready: the service manager, if any, is told that it is the
    /// service's main process, and it is left to run; its pid.
    ///
    /// # Errors
    ///
    /// The error of telling the service manager, which would not follow
    /// it: it is still armed, and dropping it kills it.
    pub(super) fn ready(&mut self) -> io::Result<u32> {
        if let Some(manager) = &self.manager {
            manager.hand_over(self.pid)?;
        }
        self.armed = false;
        Ok(self.pid)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.armed {
            sys::kill_group_and_reap(self.pid);
            // Gone: the reload is over, and this process still serves.
            if let Some(manager) = &self.manager {
                manager.stay();
            }
        }
    }
}

/// Forks and execs the program of `restart`, saying `READY=1` on `notify`:
/// under a service manager through [`notify::READY_SOCKET`], else through
/// `NOTIFY_SOCKET` (with `READY_SOCKET` emptied, lest one this process was
/// given reach it); its pid.
fn spawn(restart: &Restart, notify: &notify::Listener, managed: bool) -> io::Result<u32> {
    let mut command = activation::Command::new(&restart.program)
        .args(&restart.args)
        .process_group(0);
    for (key, value) in &restart.env {
        command = command.env(key, value);
    }
    command = if managed {
        command.env(notify::READY_SOCKET, notify.path())
    } else {
        command
            .env("NOTIFY_SOCKET", notify.path())
            .env(notify::READY_SOCKET, "")
    };
    for (name, fd) in &restart.fds {
        command = command.fd(name, fd)?;
    }
    Ok(command.spawn()?.id())
}
