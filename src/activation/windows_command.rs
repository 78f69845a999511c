//! Running a program with sockets on Windows: the program is started with
//! the handover's variables, and a server of this process hands it its
//! sockets, duplicated for its pid with `WSADuplicateSocketW`.

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::{AsHandle, AsSocket, BorrowedSocket, OwnedHandle, OwnedSocket};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::systemfd::{self, Ask, Secret};
use crate::sys;

/// How long the handover server waits, unless told otherwise: for the
/// program to ask for its sockets, and for each connection's request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections the server answers at once; more are closed
/// unanswered, so that a flood of idle connections holds no more threads.
const MOST_AT_ONCE: usize = 8;

/// The most refusals kept for [`Child::wait_handover`]'s error.
const MOST_REFUSALS: usize = 8;

/// A program to run with sockets, handed over by systemfd's protocol on
/// Windows (see the [module documentation](super)).
///
/// Every variable is this process's and those of [`env`](Command::env),
/// less the handover's own and the Unix convention's (`LISTEN_PID` and
/// the like), which the program never inherits.
///
/// # Examples
///
/// ```no_run
/// use io_fdpass::activation::Command;
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
/// let mut server = Command::new("my-server.exe")
///     .arg("--verbose")
///     .fd("http", &listener)?
///     .spawn()?;
/// server.wait_handover()?;
/// println!("pid {} has its socket", server.id());
/// server.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Command<'a> {
    program: OsString,
    args: Vec<OsString>,
    sockets: Vec<BorrowedSocket<'a>>,
    names: Vec<String>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    job: Option<&'a sys::Job>,
}

impl<'a> Command<'a> {
    /// `program`, with no arguments and no sockets yet; found as
    /// [`std::process::Command`] finds it.
    pub fn new(program: impl AsRef<OsStr>) -> Command<'a> {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            sockets: Vec::new(),
            names: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            job: None,
        }
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

    /// Hands the socket `socket` to the program under `name`: the program's
    /// [`ListenFds`](super::ListenFds) has them in the order of these
    /// calls, and `LISTEN_FDNAMES` names them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that the name rules refuse
    /// ([`check_name`](crate::notify::check_name)), or more sockets than an
    /// answer may hold (253).
    pub fn fd(mut self, name: &str, socket: &'a impl AsSocket) -> io::Result<Command<'a>> {
        crate::names::check_name(name)?;
        if self.sockets.len() == systemfd::MAX_SOCKETS {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "at most {} sockets go to a started program",
                    systemfd::MAX_SOCKETS
                ),
            ));
        }
        self.sockets.push(socket.as_socket());
        self.names.push(name.to_owned());
        Ok(self)
    }

    /// Sets the variable `key` for the program, over this process's value.
    /// The handover's variables are not among those that can be set:
    /// [`spawn`](Command::spawn) refuses them.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command<'a> {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// How long the handover server waits for the program to ask for its
    /// sockets, and for any one connection's request (30 seconds unless
    /// set).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Command<'a> {
        self.timeout = timeout;
        self
    }

    /// Starts the program in `job`, from its first instruction on, so that
    /// every process it starts is in the job too ([`sys::Job::spawn`]).
    pub(crate) fn job(mut self, job: &'a sys::Job) -> Command<'a> {
        self.job = Some(job);
        self
    }

    /// Starts the program, and a thread that hands it its sockets.
    ///
    /// The thread serves on a loopback port of its own, with a random
    /// secret, the program's pid alone, once: a request with another
    /// secret, that names another pid, or that comes from a process other
    /// than the one it names, is refused (the connection is closed with
    /// nothing sent) and recorded for [`Child::wait_handover`]. It stops
    /// once the program has its sockets, has exited, or has not asked
    /// within the [timeout](Command::timeout), and then closes its copies
    /// of the sockets. Without sockets, no server runs and no variable is
    /// set.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a variable of the handover set with
    /// [`env`](Command::env); the error of duplicating the sockets, of
    /// listening, or of starting the program (the message names it). The
    /// program is then not running.
    pub fn spawn(&self) -> io::Result<Child> {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args);
        for name in super::VARIABLES.iter().chain(&UNIX_VARIABLES) {
            command.env_remove(name);
        }
        for (key, value) in &self.env {
            let handover = super::VARIABLES.iter().chain(&UNIX_VARIABLES);
            if handover.clone().any(|name| key.eq_ignore_ascii_case(name)) {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is set by the sockets handed over, not by a variable",
                        key.to_string_lossy()
                    ),
                ));
            }
            command.env(key, value);
        }
        let handover = if self.sockets.is_empty() {
            None
        } else {
            Some(Server::new(&self.sockets, self.timeout)?)
        };
        if let Some(server) = &handover {
            command
                .env(systemfd::SERVER, server.address.to_string())
                .env(systemfd::SECRET, server.secret.to_string())
                .env("LISTEN_FDS", self.sockets.len().to_string())
                .env("LISTEN_FDNAMES", self.names.join(":"));
        }
        let started = match self.job {
            Some(job) => job.spawn(&mut command),
            None => command.spawn(),
        };
        let mut child = started.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.program.to_string_lossy()),
            )
        })?;
        let handover = match handover {
            Some(server) => {
                // The server watches the program's process for its exit;
                // without a handle to it, or without the server's thread,
                // the program runs no longer.
                let settled = Arc::new(AtomicBool::new(false));
                let started = sys::duplicate(child.as_handle())
                    .and_then(|process| server.start(child.id(), process, Arc::clone(&settled)));
                match started {
                    Ok(server) => Handover::Serving { server, settled },
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                }
            }
            None => Handover::Ended(Ok(())),
        };
        Ok(Child {
            child,
            handover: Mutex::new(handover),
        })
    }
}

/// The Unix convention's variables, which a program on Windows never
/// inherits from this process either.
const UNIX_VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS_FIRST_FD"];

/// The handover, as [`Child`] knows it: its server's thread, and whether
/// the server knows how it went; or, once the thread has been joined, how
/// it went.
#[derive(Debug)]
enum Handover {
    Serving {
        server: JoinHandle<Result<(), String>>,
        settled: Arc<AtomicBool>,
    },
    Ended(Result<(), String>),
}

impl Handover {
    /// Joins the server's thread, unless that was done: how it went.
    fn join(&mut self) -> Result<(), String> {
        let end = match std::mem::replace(self, Handover::Ended(Ok(()))) {
            Handover::Serving { server, .. } => server
                .join()
                .unwrap_or_else(|_| Err("the handover server failed unexpectedly".to_owned())),
            Handover::Ended(end) => end,
        };
        *self = Handover::Ended(end.clone());
        end
    }

    /// Whether the server waits for nothing more: it knows how the
    /// handover goes, and only sends the sockets of a granted request and
    /// closes what it has open, or has ended.
    fn settled(&self) -> bool {
        match self {
            Handover::Serving { settled, .. } => settled.load(Ordering::SeqCst),
            Handover::Ended(_) => true,
        }
    }
}

/// The handover server before it runs: its port, its secret and this
/// process's own copies of the sockets.
struct Server {
    listener: TcpListener,
    address: std::net::SocketAddr,
    secret: Secret,
    sockets: Vec<OwnedSocket>,
    timeout: Duration,
}

impl Server {
    fn new(sockets: &[BorrowedSocket<'_>], timeout: Duration) -> io::Result<Server> {
        let sockets = sockets
            .iter()
            .map(BorrowedSocket::try_clone_to_owned)
            .collect::<io::Result<_>>()?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            address: listener.local_addr()?,
            listener,
            secret: Secret::from_random(sys::random_bytes()?),
            sockets,
            timeout,
        })
    }

    /// Serves the program `pid`, whose process is `process`, in a thread
    /// of its own, which says how it went once it has closed its listener,
    /// its copies of the sockets and every connection, and its judges'
    /// threads have ended; `settled` is set once it knows how it will go
    /// (a request is granted, and its sockets are about to be sent; or the
    /// program will not get them), before all that.
    ///
    /// # Errors
    ///
    /// The error of starting the thread; the server is then closed.
    fn start(
        self,
        pid: u32,
        process: OwnedHandle,
        settled: Arc<AtomicBool>,
    ) -> io::Result<JoinHandle<Result<(), String>>> {
        std::thread::Builder::new()
            .name("io-fdpass handover".to_owned())
            .spawn(move || self.serve(pid, &process, &settled))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start the handover server: {e}")))
    }

    /// Accepts connections until a request is granted, the program has
    /// exited or the time is up. Each connection's request is read and
    /// judged in a thread of its own, so that a client that never speaks
    /// holds up no other; the verdicts come back here. At the end, the
    /// judges still reading are stopped and joined, and the connections
    /// judged meanwhile closed unanswered: nothing of the server's is left
    /// open or running once it has said how it went.
    fn serve(self, pid: u32, process: &OwnedHandle, settled: &AtomicBool) -> Result<(), String> {
        let judge = Arc::new(Judge {
            secret: self.secret,
            pid,
            timeout: self.timeout,
            stopped: AtomicBool::new(false),
        });
        let (verdicts, verdict) = mpsc::channel::<(TcpStream, Result<(), String>)>();
        let mut judges = Vec::new();
        let granted = self.answer(pid, process, &judge, &verdicts, &verdict, &mut judges);
        // Settled before the sockets go: a program that has them and then
        // says it is ready finds the server settled, and a restart joins it.
        settled.store(true, Ordering::SeqCst);
        let end = granted.and_then(|mut connection| {
            let sent = self.send_sockets(pid, &mut connection);
            let _ = connection.shutdown(Shutdown::Both);
            sent.map_err(|e| format!("the sockets could not be sent: {e}"))
        });
        judge.stopped.store(true, Ordering::Relaxed);
        for judging in judges {
            // A judge that panicked has nothing left open either.
            let _ = judging.join();
        }
        drop(verdict);
        end
    }

    /// [`serve`](Server::serve)'s loop, until a request is granted: its
    /// connection. Each judge's thread goes to `judges`, the finished ones
    /// joined as it goes.
    fn answer(
        &self,
        pid: u32,
        process: &OwnedHandle,
        judge: &Arc<Judge>,
        verdicts: &mpsc::Sender<(TcpStream, Result<(), String>)>,
        verdict: &mpsc::Receiver<(TcpStream, Result<(), String>)>,
        judges: &mut Vec<JoinHandle<()>>,
    ) -> Result<TcpStream, String> {
        let deadline = Instant::now() + self.timeout;
        let mut refusals = Vec::new();
        let tick = Duration::from_millis(50);
        loop {
            let (ended, running) = std::mem::take(judges)
                .into_iter()
                .partition::<Vec<_>, _>(JoinHandle::is_finished);
            *judges = running;
            for judging in ended {
                let _ = judging.join();
            }
            while let Ok((connection, judged)) = verdict.try_recv() {
                match judged {
                    Ok(()) => return Ok(connection),
                    Err(why) if refusals.len() < MOST_REFUSALS => refusals.push(why),
                    Err(_) => {}
                }
            }
            let why = if sys::has_exited(process.as_handle()) {
                format!("the program (pid {pid}) exited before it took its sockets")
            } else if Instant::now() >= deadline {
                format!(
                    "the program (pid {pid}) did not take its sockets within {:?}",
                    self.timeout
                )
            } else {
                match self.accept(tick) {
                    Ok(Some(connection)) if Arc::strong_count(judge) > MOST_AT_ONCE => {
                        drop(connection);
                        refusals.push("a connection beyond the most answered at once".to_owned());
                    }
                    Ok(Some(connection)) => {
                        let (judge, verdicts) = (Arc::clone(judge), verdicts.clone());
                        match std::thread::Builder::new()
                            .name("io-fdpass handover judge".to_owned())
                            .spawn(move || judge.read(connection, &verdicts))
                        {
                            Ok(judging) => judges.push(judging),
                            // The connection went with the closure.
                            Err(e) => refusals.push(format!("a connection with no thread: {e}")),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("the handover server failed: {e}")),
                }
                continue;
            };
            return Err(if refusals.is_empty() {
                why
            } else {
                format!("{why}; refused meanwhile: {}", refusals.join("; "))
            });
        }
    }

    /// A connection, if one comes within `tick`.
    fn accept(&self, tick: Duration) -> io::Result<Option<TcpStream>> {
        super::accept_within(&self.listener, tick)
    }

    /// Duplicates each socket for the program `pid` and sends the records.
    fn send_sockets(&self, pid: u32, connection: &mut TcpStream) -> io::Result<()> {
        let mut answer = Vec::with_capacity(self.sockets.len() * sys::PROTOCOL_INFO_LEN);
        for socket in &self.sockets {
            answer.extend_from_slice(&sys::duplicate_socket(socket.as_socket(), pid)?);
        }
        connection.set_nonblocking(false)?;
        connection.set_write_timeout(Some(self.timeout))?;
        connection.write_all(&answer)?;
        connection.shutdown(Shutdown::Write)
    }
}

/// What each connection's thread needs to judge a request.
struct Judge {
    secret: Secret,
    pid: u32,
    timeout: Duration,
    /// Set once the server has stopped: a request still being read is
    /// given up.
    stopped: AtomicBool,
}

impl Judge {
    /// Reads one request, within the timeout, judges it, and hands the
    /// connection and the verdict back to the server; a refused connection
    /// is closed with nothing sent.
    fn read(
        &self,
        mut connection: TcpStream,
        verdicts: &mpsc::Sender<(TcpStream, Result<(), String>)>,
    ) {
        let verdict = self.read_request(&mut connection);
        // A server that has stopped closes the connection by dropping it.
        let _ = verdicts.send((connection, verdict));
    }

    /// Reads and judges a request: `Err` says why it is refused.
    fn read_request(&self, connection: &mut TcpStream) -> Result<(), String> {
        let request = super::read_request(connection, Instant::now() + self.timeout, || {
            self.stopped.load(Ordering::Relaxed)
        })?;
        let peer = || sys::peer_pid_within(connection.as_socket(), super::PEER_LOOKUP);
        systemfd::judge(&request, &self.secret, self.pid, peer)?;
        match request.ask {
            Ask::Sockets => Ok(()),
            Ask::Ready => Err("a readiness message, which goes to NOTIFY_SOCKET".to_owned()),
        }
    }
}

/// A program started by [`Command::spawn`].
///
/// Like [`std::process::Child`], dropping it neither kills nor waits for
/// the process; the handover server goes on until it ends by itself.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    handover: Mutex<Handover>,
}

impl Child {
    /// Its process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Ends it (`TerminateProcess`); nothing once it has ended.
    ///
    /// # Errors
    ///
    /// The error of `TerminateProcess`.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            Some(_) => Ok(()),
            None => self.child.kill(),
        }
    }

    /// Waits for it to end, and says how it did.
    ///
    /// # Errors
    ///
    /// The error of waiting.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// How it ended, if it has, without waiting.
    ///
    /// # Errors
    ///
    /// The error of asking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits until the handover has ended: `Ok` once the program has its
    /// sockets (at once when it was given none). The server has then
    /// closed all it had open, and its threads have ended.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`], saying why the program has not got them (it
    /// exited, did not ask in time, or the sockets could not be sent), and
    /// every request that was refused meanwhile, with the reason.
    pub fn wait_handover(&self) -> io::Result<()> {
        self.handover().join().map_err(io::Error::other)
    }

    /// Waits for the handover server to end if it knows how the handover
    /// went (the program has its sockets, or has exited), as a restart
    /// does before it returns: nothing of the server's is then left open
    /// or running. A server still waiting for the program's request goes
    /// on until it comes (the program may ask after saying it is ready),
    /// the program exits, or the timeout.
    pub(crate) fn join_settled_handover(&self) {
        let mut handover = self.handover();
        if handover.settled() {
            let _ = handover.join();
        }
    }

    /// The handover; a thread that panicked holding it left it whole.
    fn handover(&self) -> std::sync::MutexGuard<'_, Handover> {
        self.handover.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
