//! [`Handover`]: a service handed from one process to another under a
//! service manager, and [`READY_SOCKET`].

use std::io::{self, ErrorKind};

use super::{Message, Notifier};

/// The variable that names, in the environment of a process started to
/// take over a service, the socket on which the process that started it
/// waits for its `READY=1`. [`ready`](super::ready) says `READY=1` there
/// (once) instead of to `$NOTIFY_SOCKET`, and the waiting process passes it
/// on to the service manager together with `MAINPID=`.
///
/// A program that does not use this crate says `READY=1` on this socket
/// the way it says it on `$NOTIFY_SOCKET` (a datagram to the path named),
/// and need not tell the service manager itself.
pub const READY_SOCKET: &str = "IO_FDPASS_READY_SOCKET";

/// The service manager of this process, as a process that hands the
/// service over to another sees it: the socket named by `$NOTIFY_SOCKET`.
///
/// A service handed from one process to another under a service manager
/// such as systemd: the running process starts the next with
/// `$NOTIFY_SOCKET` unchanged, hears its `READY=1` on a socket of its own
/// named by [`READY_SOCKET`], and then tells the service manager that the
/// next process is the service's main process (`MAINPID=`), before it
/// exits itself.
///
/// Without the move of `MAINPID=`, systemd sees the service's main process
/// exit once the next one has taken over, stops the unit and kills the
/// next process with it. And with a private `$NOTIFY_SOCKET` instead of
/// systemd's, the next process could not speak to systemd itself: no
/// `STATUS=`, no fd store, no restart of its own.
///
/// # What a unit needs
///
/// - `NotifyAccess=all`. Until `MAINPID=` has moved, the next process is
///   not the main process, and with `NotifyAccess=main` (the default of
///   `Type=notify`) systemd drops what it says: its `STATUS=`, and the fds
///   it stores in the fd store before it is ready. The waiting side's own
///   messages are sent by the main process (a restart) or by a process of
///   the unit that is not its main one (`fdpass adopt --stop-old`'s
///   watcher), so only `all` lets every step through.
/// - `KillMode=control-group` (the default) or `mixed`. During a restart
///   the unit has two generations for a while, and after it the old one
///   may still be finishing its requests; both are in the unit's control
///   group, and a stop must reach both. With `KillMode=process` a stop
///   signals only the main process, and leaves the other generation
///   running, outside any unit's control. `mixed` sends SIGTERM to the
///   main process only and SIGKILL to the rest once it has exited, so an
///   old generation still finishing is killed at a stop rather than asked;
///   `control-group` asks every process with SIGTERM first.
/// - `Type=notify`, or `Type=notify-reload` (systemd 253 and later), where
///   systemd sends SIGHUP itself and waits for `RELOADING=1` and then
///   `READY=1`, which a restart sends. With `Type=notify`, reload by
///   `ExecReload=/bin/kill -HUP $MAINPID`.
#[derive(Debug, Clone)]
pub struct Handover {
    manager: Notifier,
}

impl Handover {
    /// The service manager named by `$NOTIFY_SOCKET`, told that a reload
    /// begins: `RELOADING=1` with `MONOTONIC_USEC=` the time now, as
    /// `Type=notify-reload` asks (systemd 252 takes `RELOADING=1` too, and
    /// shows the unit reloading until `READY=1`).
    ///
    /// `Ok(None)` when `$NOTIFY_SOCKET` is unset, or names a socket that is
    /// gone or no longer read ([`ErrorKind::NotFound`],
    /// [`ErrorKind::ConnectionRefused`]): a process that no service manager
    /// supervises, or one started by a waiter that has gone since.
    ///
    /// # Errors
    ///
    /// Any other error of sending the message, such as
    /// [`ErrorKind::WouldBlock`] from a service manager that is not
    /// reading.
    pub fn reloading() -> io::Result<Option<Handover>> {
        let Some(manager) = Notifier::from_env() else {
            return Ok(None);
        };
        match manager.send(&Message::Reloading(monotonic_usec()).text()?, &[]) {
            Ok(()) => Ok(Some(Handover { manager })),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The service manager named by `$NOTIFY_SOCKET`, for a process that
    /// starts the one that takes over from another, and tells nothing
    /// before; `None` when it is unset.
    #[must_use]
    pub fn from_env() -> Option<Handover> {
        Notifier::from_env().map(|manager| Handover { manager })
    }

    /// Tells the service manager that process `pid` is the service's main
    /// process now, and that it is ready: `MAINPID=pid` and `READY=1` in
    /// one datagram, sent before this process exits, so that systemd
    /// follows the new main process and never sees the service's end.
    ///
    /// # Errors
    ///
    /// The error of sending it ([`Notifier::send`]): the service manager
    /// was not told, and would stop the service when this process exits.
    pub fn hand_over(&self, pid: u32) -> io::Result<()> {
        self.manager.send(&Message::MainPid(pid).text()?, &[])
    }

    /// Tells the service manager that the service goes on as it was, with
    /// this process as its main process: `READY=1`, which ends the reload
    /// that [`reloading`](Handover::reloading) began. Best effort: a
    /// service manager that cannot be told keeps the unit "reloading" until
    /// its timeout, and the service serves all the same.
    pub fn stay(&self) {
        if let Ok(text) = Message::Ready.text() {
            let _ = self.manager.send(&text, &[]);
        }
    }
}

/// `CLOCK_MONOTONIC` now in microseconds, the clock of `MONOTONIC_USEC=`.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}
