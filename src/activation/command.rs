//! Running a program with fds laid out by the socket-activation convention:
//! the starting side of what [`ListenFds`](super::ListenFds) adopts.

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::{notify, sys};

/// Where [`find_program`] looks when `PATH` is unset, as the shell does.
const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// A program to run with fds as 3, 4, …, `LISTEN_FDS`, `LISTEN_PID` and
/// `LISTEN_FDNAMES` set: the socket-activation convention, as systemd
/// starts a service.
///
/// Every other variable is this process's and those of [`env`], less the
/// convention's own (`LISTEN_PIDFDID` and `LISTEN_FDS_FIRST_FD` among
/// them), so that the program never inherits a stale one, whatever
/// [`ListenFds::take`](super::ListenFds::take) left in this process's
/// environment.
///
/// [`spawn`] starts it as a child, whose `LISTEN_PID` is its own pid:
/// `std::process::Command` cannot set that, since the pid is known only
/// after the fork, and a variable cannot be set between fork and exec
/// without allocating. [`exec`] replaces this process with it.
///
/// [`env`]: Command::env
/// [`spawn`]: Command::spawn
/// [`exec`]: Command::exec
///
/// # Examples
///
/// ```no_run
/// use io_fdpass::activation::Command;
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
/// let mut server = Command::new("my-server")
///     .arg("--verbose")
///     .fd("http", &listener)?
///     .spawn()?;
/// println!("serving as pid {}", server.id());
/// server.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Command<'a> {
    program: OsString,
    arg0: Option<OsString>,
    args: Vec<OsString>,
    fds: Vec<BorrowedFd<'a>>,
    names: Vec<String>,
    env: Vec<(OsString, OsString)>,
    process_group: Option<i32>,
}

impl<'a> Command<'a> {
    /// `program`, with no arguments and no fds yet. A program without a
    /// `/` is looked up in `PATH` by [`find_program`] when it is run.
    pub fn new(program: impl AsRef<OsStr>) -> Command<'a> {
        Command {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            fds: Vec::new(),
            names: Vec::new(),
            env: Vec::new(),
            process_group: None,
        }
    }

    /// The name the program sees as its own (`argv[0]`); the program as
    /// given to [`new`](Command::new) unless set.
    #[must_use]
    pub fn arg0(mut self, arg0: impl AsRef<OsStr>) -> Command<'a> {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Adds an argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command<'a> {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    #[must_use]
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command<'a> {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Hands `fd` to the program under `name`: the fds are 3, 4, … in the
    /// order of these calls, and `LISTEN_FDNAMES` names them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that the name rules refuse
    /// ([`notify::check_name`]), or more than [`MAX_FDS`](crate::MAX_FDS)
    /// fds.
    pub fn fd(mut self, name: &str, fd: &'a impl AsFd) -> io::Result<Command<'a>> {
        notify::check_name(name)?;
        if self.fds.len() == crate::MAX_FDS {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("at most {} fds go to a started program", crate::MAX_FDS),
            ));
        }
        self.fds.push(fd.as_fd());
        self.names.push(name.to_owned());
        Ok(self)
    }

    /// Sets the variable `key` for the program, over this process's value.
    /// The convention's variables are not among those that can be set:
    /// [`spawn`](Command::spawn) and [`exec`](Command::exec) refuse them.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command<'a> {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Puts the program in the process group `group` (`setpgid(2)` between
    /// the fork and the exec, as [`std::os::unix::process::CommandExt::process_group`]
    /// does), or in a new group of its own, whose id is its pid, for 0.
    /// Unless set, it stays in this process's group.
    ///
    /// A group of its own lets the program and whatever it forks be
    /// signalled at once (`kill(-pid, sig)`), and keeps a terminal's
    /// Ctrl-C, which goes to the foreground group, from reaching it.
    #[must_use]
    pub fn process_group(mut self, group: i32) -> Command<'a> {
        self.process_group = Some(group);
        self
    }

    /// Starts the program as a child of this process, and returns it once
    /// the exec has succeeded.
    ///
    /// Its `LISTEN_PID` is its own pid. Its signal mask is cleared and
    /// `SIGPIPE` has its default action. Fds of this process that are not
    /// close-on-exec are inherited too, as by any `exec`. Between the start
    /// and the exec the child only makes async-signal-safe calls, and
    /// allocates nothing, so this is sound in a process with threads.
    ///
    /// On Linux the child shares this process's memory until its exec
    /// (`clone` with `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does), and
    /// only the calling thread waits for it: the address space is not
    /// copied, so a server with a large heap starts its next generation in
    /// about the same time as a small one, and its other threads are not
    /// held up. Elsewhere it is a `fork` and an `execve`.
    ///
    /// # Errors
    ///
    /// As [`find_program`]; [`ErrorKind::InvalidInput`] for a NUL byte in
    /// the program, an argument or a variable, or a variable of the
    /// convention set with [`env`](Command::env); otherwise the error of
    /// the `clone` or `fork`, the `setpgid` ([`process_group`](Command::process_group))
    /// or the `execve` (the message names the program). The program is then
    /// not running.
    pub fn spawn(&self) -> io::Result<Child> {
        let pid = self.launch()?.spawn()?;
        Ok(Child { pid, status: None })
    }

    /// Replaces this process with the program (`execve`), keeping its pid,
    /// which is `LISTEN_PID`. Returns only on failure.
    ///
    /// The program inherits only fds 0–2 and those given: every other fd
    /// of this process above 2 is closed first (`close_range` where Linux
    /// has it), and the fds given are moved onto 3, 4, … in place, so the
    /// layout needs only one fd beyond them, wherever the open-file limit
    /// is. Hand over every fd above 2 that must survive, and call this
    /// where no other thread uses fds. Its signal mask is cleared and
    /// `SIGPIPE` has its default action.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Command::spawn); [`ErrorKind::InvalidInput`], with
    /// nothing changed, when fds 0 to 3 + N would not be below the
    /// open-file limit. By the time the `execve` fails, this process's
    /// other fds above 2 are closed and fds 3, 4, … hold the fds given:
    /// the process should report the error and exit.
    #[must_use]
    pub fn exec(&self) -> io::Error {
        match self.launch() {
            Ok(launch) => launch.exec(),
            Err(err) => err,
        }
    }

    /// Checks, changing nothing, what [`exec`](Command::exec) would refuse
    /// before it lets go of anything: the program, the variables, and room
    /// for the fds within the open-file limit ([`room_for`]).
    ///
    /// # Errors
    ///
    /// As [`exec`](Command::exec) before it closes or moves an fd.
    pub fn check(&self) -> io::Result<()> {
        self.launch()?;
        room_for(self.fds.len())
    }

    /// The strings and fds of the program, checked and made.
    fn launch(&self) -> io::Result<sys::Launch> {
        for (key, _) in &self.env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("\"{}\" cannot name an environment variable", key.display()),
                ));
            }
            if super::VARIABLES.iter().any(|name| key == *name) {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is set by the fds handed over, not by a variable",
                        key.to_string_lossy()
                    ),
                ));
            }
        }
        let program = find_program(&self.program)?;
        let mut argv = vec![self.arg0.as_deref().unwrap_or(&self.program)];
        argv.extend(self.args.iter().map(OsString::as_os_str));
        let env: Vec<(&OsStr, &OsStr)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_os_str(), value.as_os_str()))
            .collect();
        let mut launch = sys::Launch::new(&program, &argv, &env, &self.fds, &self.names.join(":"))?;
        launch.process_group(self.process_group);
        Ok(launch)
    }
}

/// Whether `count` fds can be handed to a program by [`Command::exec`] or
/// [`Command::spawn`]: at most [`MAX_FDS`](crate::MAX_FDS), and room for
/// them within this process's open-file limit, beside fds 0–2 and the one
/// temporary that laying them out in place may need.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`], saying which limit stands in the way.
pub fn room_for(count: usize) -> io::Result<()> {
    sys::room_for(count)
}

/// A program started by [`Command::spawn`].
///
/// Like [`std::process::Child`], dropping it neither kills nor waits for
/// the process: one that ends unwaited for stays a zombie until this
/// process ends.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    /// How it ended, once reaped: its pid may be another process's since.
    status: Option<ExitStatus>,
}

impl Child {
    /// Its process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends it `SIGKILL`; nothing once it has been waited for.
    ///
    /// # Errors
    ///
    /// The error of `kill(2)`.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.status {
            Some(_) => Ok(()),
            None => sys::kill_child(self.pid),
        }
    }

    /// Waits for it to end (`waitpid`), and says how it did.
    ///
    /// # Errors
    ///
    /// The error of `waitpid(2)`.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = sys::wait_child(self.pid, true)?;
        self.status = status;
        status.ok_or_else(|| io::Error::other("waitpid returned without a status"))
    }

    /// How it ended, if it has, without waiting.
    ///
    /// # Errors
    ///
    /// The error of `waitpid(2)`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = sys::wait_child(self.pid, false)?;
        }
        Ok(self.status)
    }
}

/// The program `name` names, as the shell finds it: `name` itself if it has
/// a `/`, else the first file of that name in a directory of `PATH`
/// (`/usr/bin:/bin` when `PATH` is unset) with an execute bit set.
///
/// # Errors
///
/// [`ErrorKind::NotFound`] when there is no such file (a shell's exit
/// status 127); [`ErrorKind::PermissionDenied`] when there is one but it
/// is not an executable file (status 126). The message names `name`.
///
/// # Examples
///
/// ```
/// let sh = io_fdpass::activation::find_program("sh")?;
/// assert!(sh.is_absolute() || sh.starts_with("."));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn find_program(name: impl AsRef<OsStr>) -> io::Result<PathBuf> {
    let name = name.as_ref();
    let shown = name.to_string_lossy();
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match runnable(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(io::Error::new(
                ErrorKind::PermissionDenied,
                format!("{shown} is not an executable file"),
            )),
            None => Err(io::Error::new(
                ErrorKind::NotFound,
                format!("{shown}: no such file"),
            )),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut not_executable = None;
    if !name.is_empty() {
        for candidate in std::env::split_paths(&path).map(|dir| dir.join(name)) {
            match runnable(&candidate) {
                Some(true) => return Ok(candidate),
                Some(false) if not_executable.is_none() => not_executable = Some(candidate),
                _ => {}
            }
        }
    }
    Err(match not_executable {
        Some(path) => io::Error::new(
            ErrorKind::PermissionDenied,
            format!("{} is not an executable file", path.display()),
        ),
        None => io::Error::new(ErrorKind::NotFound, format!("{shown} is not in PATH")),
    })
}

/// Whether `path` is an executable file: `None` when nothing is there,
/// `Some(false)` for a directory or a file without an execute bit.
fn runnable(path: &Path) -> Option<bool> {
    let meta = path.metadata().ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_checked_not_searched() {
        assert_eq!(find_program("/bin/sh").unwrap(), Path::new("/bin/sh"));
        let missing = find_program("/no/such/program").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        let directory = find_program("/").unwrap_err();
        assert_eq!(directory.kind(), ErrorKind::PermissionDenied, "{directory}");
    }

    #[test]
    fn a_name_is_searched_in_path_for_an_executable_file() {
        let sh = find_program("sh").unwrap();
        assert!(sh.ends_with("sh") && sh.is_file(), "{}", sh.display());
        let missing = find_program("no-such-program-anywhere").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        assert!(missing.to_string().contains("no-such-program-anywhere"));
        assert_eq!(find_program("").unwrap_err().kind(), ErrorKind::NotFound);
    }
}
