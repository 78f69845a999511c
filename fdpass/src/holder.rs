//! `fdpass hold`: keeps fds under names while the programs that use them
//! come and go.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fail::{self, Failure, Result};
use crate::protocol::{self, Request, MAX_REQUEST};
use crate::socket::SocketName;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most clients served at once; more are turned away at once.
const MAX_CLIENTS: usize = 64;

/// The fds held, by name.
type Held = BTreeMap<String, OwnedFd>;

/// An answer's text and fds, or a refusal's exit code and message.
type Reply = std::result::Result<(String, Vec<OwnedFd>), (u8, String)>;

/// The holder's settings.
pub struct Holder {
    /// Uids served besides the holder's own.
    pub allow_uids: Vec<u32>,
    /// The most names held at once.
    pub max_names: usize,
    /// Log each request on stderr.
    pub verbose: bool,
}

impl Holder {
    /// Serves clients at `socket` until SIGTERM, SIGINT or SIGHUP.
    pub fn run(self, socket: &SocketName) -> Result<()> {
        // Before any thread exists, so that every thread blocks them and
        // only the waiting thread takes them.
        let signals = crate::signals::block_termination()
            .map_err(|err| Failure::os("cannot set up signal handling", err))?;
        let listening = socket.listen()?;
        let path = listening.path().map(ToOwned::to_owned);
        let verbose = self.verbose;
        std::thread::spawn(move || {
            let signal = signals.wait();
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
            if verbose {
                eprintln!("fdpass hold: signal {signal}, exiting");
            }
            std::process::exit(0);
        });
        if self.verbose {
            eprintln!("fdpass hold: holding fds at {socket}");
        }

        // Each client on a thread of its own, so that one that stalls
        // holds up no other; what is held is behind one lock.
        let holder = Arc::new(self);
        let held = Arc::new(Mutex::new(BTreeMap::new()));
        let clients = Arc::new(AtomicUsize::new(0));
        loop {
            let stream = match listening.listener.accept() {
                Ok((stream, _)) => stream,
                // A connection that went away before it was accepted, or
                // a momentary shortage of fds: neither ends the holder.
                Err(err) => {
                    holder.log(format_args!("accept failed: {err}"));
                    if err.kind() != ErrorKind::ConnectionAborted {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                clients.fetch_sub(1, Ordering::SeqCst);
                holder.log(format_args!(
                    "refused a client: {MAX_CLIENTS} are being served"
                ));
                continue;
            }
            let spawned = std::thread::Builder::new().spawn({
                let (holder, held, clients) = (holder.clone(), held.clone(), clients.clone());
                move || {
                    if let Err(err) = holder.serve(&stream, &held) {
                        holder.log(format_args!("a client went away: {err}"));
                    }
                    clients.fetch_sub(1, Ordering::SeqCst);
                }
            });
            if let Err(err) = spawned {
                // The closure, and the connection with it, are gone.
                clients.fetch_sub(1, Ordering::SeqCst);
                holder.log(format_args!("cannot start a thread for a client: {err}"));
            }
        }
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.verbose {
            eprintln!("fdpass hold: {what}");
        }
    }

    /// Answers one client's request. An error here is the client's: it is
    /// logged and the holder goes on.
    fn serve(&self, stream: &UnixStream, held: &Mutex<Held>) -> io::Result<()> {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        // The request is read before the peer is checked, so that a
        // refusal reaches a client that is still sending.
        let request = read_request(stream)?;
        let reply = match self.check_peer(stream) {
            Err(message) => Err((fail::NO_PERMISSION, message)),
            Ok(()) => match request {
                Err(message) => Err((fail::DATA, message)),
                Ok((request, fd)) => {
                    // A client thread that panicked would have left the map
                    // as it was between two requests: still whole.
                    let mut held = held
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    self.answer(&mut held, request, fd)
                }
            },
        };
        // The lock is released: a client that reads slowly holds up no one.
        match reply {
            Ok((text, fds)) => {
                let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
                protocol::send_all(stream, text.as_bytes(), &fds)
            }
            Err((code, message)) => {
                self.log(format_args!("refused: {message}"));
                protocol::send_all(stream, format!("error {code} {message}\n").as_bytes(), &[])
            }
        }
    }

    /// Carries out a request on what is held: the answer's text and fds
    /// (copies of the held ones), or a refusal's exit code and message.
    fn answer(&self, held: &mut Held, request: Request, fd: Option<OwnedFd>) -> Reply {
        let not_held = |name: &str| (fail::NO_INPUT, format!("it holds no fd named {name}"));
        match (request, fd) {
            (Request::Store(name), Some(fd)) => {
                if !held.contains_key(&name) && held.len() >= self.max_names {
                    return Err((
                        fail::NO_PERMISSION,
                        format!(
                            "it holds {} names, its limit (--max-names); drop one first",
                            held.len()
                        ),
                    ));
                }
                self.log(format_args!("stored {name}"));
                held.insert(name, fd);
                Ok(("ok\n".into(), Vec::new()))
            }
            (Request::Store(_), None) => Err((fail::DATA, "store came without an fd".into())),
            (_, Some(_)) => Err((
                fail::DATA,
                "only store comes with an fd; it was closed".into(),
            )),
            (Request::Fetch(names), None) => {
                let mut fds = Vec::with_capacity(names.len());
                for name in &names {
                    let fd = held.get(name).ok_or_else(|| not_held(name))?;
                    fds.push(fd.try_clone().map_err(|err| {
                        (fail::OS, format!("cannot copy the fd named {name}: {err}"))
                    })?);
                }
                self.log(format_args!("fetched {}", names.join(" ")));
                Ok(("ok\n".into(), fds))
            }
            (Request::List, None) => {
                let mut text = String::from("ok\n");
                for name in held.keys() {
                    text.push_str(name);
                    text.push('\n');
                }
                Ok((text, Vec::new()))
            }
            (Request::Drop(name), None) => {
                held.remove(&name).ok_or_else(|| not_held(&name))?;
                self.log(format_args!("dropped {name}"));
                Ok(("ok\n".into(), Vec::new()))
            }
        }
    }

    /// Serves only this user, and the users `--allow-uid` names.
    fn check_peer(&self, stream: &UnixStream) -> std::result::Result<(), String> {
        let uid = io_fdpass::peer_credentials(stream)
            .map(|peer| peer.uid)
            .map_err(|err| format!("cannot tell who the client is: {err}"))?;
        let own = rustix::process::getuid().as_raw();
        if uid == own || self.allow_uids.contains(&uid) {
            Ok(())
        } else {
            Err(format!(
                "uid {uid} may not use this holder (it serves uid {own}; start it with --allow-uid {uid} to allow)"
            ))
        }
    }
}

/// A request and the fd that came with it, or why it was refused.
type Parsed = std::result::Result<(Request, Option<OwnedFd>), String>;

/// Reads one request line and the fd, if any, that came with it. The outer
/// error is the connection's; the inner one, the request's.
fn read_request(stream: &UnixStream) -> io::Result<Parsed> {
    let mut line = vec![0; MAX_REQUEST];
    let mut len = 0;
    let mut fd = [None];
    let mut surplus = false;
    loop {
        let got = io_fdpass::recv_with_fds(stream, &mut line[len..], &mut fd)?;
        surplus |= got.fds_discarded > 0 || got.control_truncated;
        if got.bytes == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of its request",
            ));
        }
        if let Some(end) = line[len..len + got.bytes].iter().position(|&b| b == b'\n') {
            len += end;
            break;
        }
        len += got.bytes;
        if len == line.len() {
            return Ok(Err(format!("a request is at most {MAX_REQUEST} bytes")));
        }
    }
    if surplus {
        return Ok(Err(
            "a request carries at most one fd; all were closed".into()
        ));
    }
    let Ok(line) = std::str::from_utf8(&line[..len]) else {
        return Ok(Err("the request is not text".into()));
    };
    let [fd] = fd;
    Ok(Request::parse(line).map(|request| (request, fd)))
}
