//! `fdpass hold`: keeps fds under names while the programs that use them
//! come and go.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::fail::{self, Failure, Result};
use crate::protocol::{self, Request, MAX_REQUEST};
use crate::socket::SocketName;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

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

        let mut held = BTreeMap::new();
        loop {
            let stream = match listening.listener.accept() {
                Ok((stream, _)) => stream,
                // A connection that went away before it was accepted, or
                // a momentary shortage of fds: neither ends the holder.
                Err(err) => {
                    self.log(format_args!("accept failed: {err}"));
                    if err.kind() != ErrorKind::ConnectionAborted {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            if let Err(err) = self.serve(&stream, &mut held) {
                self.log(format_args!("a client went away: {err}"));
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
    fn serve(&self, stream: &UnixStream, held: &mut BTreeMap<String, OwnedFd>) -> io::Result<()> {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let refuse = |code: u8, message: &str| {
            self.log(format_args!("refused: {message}"));
            protocol::send_all(stream, format!("error {code} {message}\n").as_bytes(), &[])
        };
        // The request is read before the peer is checked, so that a
        // refusal reaches a client that is still sending.
        let request = read_request(stream)?;
        if let Err(message) = self.check_peer(stream) {
            return refuse(fail::NO_PERMISSION, &message);
        }
        let (request, fd) = match request {
            Ok(request) => request,
            Err(message) => return refuse(fail::DATA, &message),
        };
        match (request, fd) {
            (Request::Store(name), Some(fd)) => {
                if !held.contains_key(&name) && held.len() >= self.max_names {
                    let message = format!(
                        "it holds {} names, its limit (--max-names); drop one first",
                        held.len()
                    );
                    return refuse(fail::NO_PERMISSION, &message);
                }
                self.log(format_args!("stored {name}"));
                held.insert(name, fd);
                protocol::send_all(stream, b"ok\n", &[])
            }
            (Request::Store(_), None) => refuse(fail::DATA, "store came without an fd"),
            (_, Some(_)) => refuse(fail::DATA, "only store comes with an fd; it was closed"),
            (Request::Fetch(names), None) => {
                let mut fds = Vec::with_capacity(names.len());
                for name in &names {
                    match held.get(name) {
                        Some(fd) => fds.push(fd.as_fd()),
                        None => {
                            return refuse(fail::NO_INPUT, &format!("it holds no fd named {name}"))
                        }
                    }
                }
                self.log(format_args!("fetched {}", names.join(" ")));
                protocol::send_all(stream, b"ok\n", &fds)
            }
            (Request::List, None) => {
                let mut answer = String::from("ok\n");
                for name in held.keys() {
                    answer.push_str(name);
                    answer.push('\n');
                }
                protocol::send_all(stream, answer.as_bytes(), &[])
            }
            (Request::Drop(name), None) => match held.remove(&name) {
                Some(_closed) => {
                    self.log(format_args!("dropped {name}"));
                    protocol::send_all(stream, b"ok\n", &[])
                }
                None => refuse(fail::NO_INPUT, &format!("it holds no fd named {name}")),
            },
        }
    }

    /// Serves only this user, and the users `--allow-uid` names.
    fn check_peer(&self, stream: &UnixStream) -> std::result::Result<(), String> {
        let uid =
            peer_uid(stream).map_err(|err| format!("cannot tell who the client is: {err}"))?;
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

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(_: &UnixStream) -> io::Result<u32> {
    Err(io::Error::new(
        ErrorKind::Unsupported,
        "peer credentials are read only on Linux",
    ))
}

/// A request and the fd that came with it, or why it was refused.
type Parsed = std::result::Result<(Request, Option<OwnedFd>), String>;

/// Reads one request line and the fd, if any, that came with it. The outer
/// error is the connection's; the inner one, the request's.
fn read_request(stream: &UnixStream) -> io::Result<Parsed> {
    let mut line = vec![0; MAX_REQUEST];
    let mut len = 0;
    let mut fds = Vec::with_capacity(1);
    let mut surplus = false;
    loop {
        let got = io_fdpass::recv_with_fds(stream, &mut line[len..], &mut fds)?;
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
    Ok(Request::parse(line).map(|request| (request, fds.pop())))
}
