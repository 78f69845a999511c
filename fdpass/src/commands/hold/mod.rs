//! `fdpass hold`: keeps fds under names while the programs that use them
//! come and go, and loses none when it restarts.
//!
//! What it decides is the library's state machine
//! (`io_fdpass::holder::Holder`), and its server side the library's too
//! (`io_fdpass::holder::Server`): one thread runs an event loop (tokio's,
//! on the current thread), where each client is a task with one deadline
//! for its whole request, so a slow or silent client holds up no other,
//! and when connections run short the oldest is dropped to make room. The
//! peer's uid and gid are checked as soon as it connects, before anything
//! is read. Here are what only the command does: its settings, what it
//! starts from ([`start`]), systemd's fd store and the state file
//! ([`serve`], [`state_file`]), its signals ([`signals`]) and its upgrade
//! ([`upgrade`]).
//!
//! What is held is recorded in a state file (a memfd, or an unlinked file
//! where there is none): every name with its metadata and lifetime,
//! rewritten on each change. It goes with the fds wherever they go: to the
//! next image on SIGHUP, laid out as `LISTEN_FDS` with the socket
//! (`fdpass-hold`) and the state file (`fdpass-hold-state`), while a
//! watcher keeps copies of them all until the new image says it serves
//! (see [`upgrade`]), and to
//! systemd's fd store, which hands them all back the same way after a
//! crash.

mod serve;
mod signals;
mod start;
mod state_file;
mod upgrade;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::{Access, SocketName};
use crate::cli::HoldArgs;
use crate::fail::{self, Failure, Result};
use crate::output::Log;

/// `fdpass hold`: serves until SIGTERM or SIGINT; on SIGHUP, executes
/// itself again with everything it holds.
pub fn run(args: &HoldArgs, log: Log) -> Result<()> {
    // First, before the event loop, a group lookup or anything else opens
    // an fd: a number `LISTEN_FDS` counts that was not passed would be
    // this process's own by then, and held under a name.
    let given = start::given()?;
    let settings = Settings::new(args, log.verbose)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::os("cannot start the event loop", err))?;
    runtime.block_on(serve::serve(settings, given))
}

/// What `hold`'s flags say, resolved.
struct Settings {
    socket: SocketName,
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    access: Access,
    max_names: usize,
    from: Option<SocketName>,
    client_timeout: Duration,
    verbose: bool,
    /// This binary, for SIGHUP, and the arguments it was started with.
    program: Option<PathBuf>,
    args: Vec<OsString>,
}

impl Settings {
    fn new(args: &HoldArgs, verbose: bool) -> Result<Settings> {
        if matches!(args.socket, SocketName::Abstract(_))
            && (args.mode.is_some() || args.group.is_some())
        {
            return Err(Failure::new(
                fail::USAGE,
                "an abstract socket name has no file, so no mode or group: the holder's uid and gid check is what protects it",
            ));
        }
        let allow_gids = args
            .allow_gids
            .iter()
            .map(|group| group_id(group))
            .collect::<Result<Vec<_>>>()?;
        let group = match &args.group {
            Some(group) => Some(group_id(group)?),
            None => allow_gids.first().copied(),
        };
        let mode = args.mode.unwrap_or_else(|| {
            let mut mode = 0o600;
            if !allow_gids.is_empty() {
                mode |= 0o060;
            }
            if !args.allow_uids.is_empty() || allow_gids.len() > 1 {
                mode |= 0o006;
            }
            mode
        });
        let max_names = max_names(args.max_names, verbose);
        Ok(Settings {
            socket: args.socket.clone(),
            allow_uids: args.allow_uids.clone(),
            allow_gids,
            access: Access { mode, group },
            max_names,
            from: args.from.clone(),
            client_timeout: args.client_timeout,
            verbose,
            program: std::env::current_exe().ok(),
            args: std::env::args_os().collect(),
        })
    }
}

/// `--max-names`, within what the open-file limit allows (raised to the
/// hard limit first): a holder with every fd of its limit held could
/// answer no one. Said in the log, and as a warning when `--max-names`
/// asked for more than the default.
fn max_names(asked: usize, verbose: bool) -> usize {
    let limit = serve::raise_fd_limit();
    let allowed = io_fdpass::holder::max_names_within(limit);
    if asked <= allowed {
        return asked;
    }
    let why = format!(
        "holds at most {allowed} names, not {asked}: its open-file limit (RLIMIT_NOFILE) is {limit}, and it keeps room for a copy of each and {} more",
        io_fdpass::holder::FD_RESERVE
    );
    if asked != io_fdpass::holder::DEFAULT_MAX_NAMES {
        crate::output::message(format_args!("hold: warning: --max-names {asked}: {why}"));
    } else if verbose {
        crate::output::message(format_args!("hold: {why}"));
    }
    allowed
}

/// A group's id, from its number or its name.
fn group_id(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let unknown = || Failure::new(fail::USAGE, format!("there is no group named {group:?}"));
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    let mut entry = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut found: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: every pointer is valid for the call: the name is a C string,
    // `entry` and `found` are written by it, and `buf` is as long as passed.
    let err = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            entry.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut found,
        )
    };
    if err != 0 || found.is_null() {
        return Err(unknown());
    }
    // SAFETY: `found` is not null, so getgrnam_r filled `entry`.
    Ok(unsafe { entry.assume_init() }.gr_gid)
}
