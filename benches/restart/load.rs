//! The load: HTTP GETs at a fixed rate on 127.0.0.1, each recorded with its
//! start, how late it started, its latency and its outcome, never retried.
//!
//! Two modes. With a new connection per request, a request is started
//! every 1/rate seconds whatever the others do (an open loop: a slow
//! answer does not hold the next request back). With keep-alive, a fixed
//! set of HTTP/1.1 connections is reused, each sending its next request at
//! its own share of the rate, or at once when it is behind; a connection
//! that the server closed (a `Connection: close` answer, or a close seen
//! before the next request is sent) is counted as closed by the server and
//! replaced by a new one.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_fdpass_test_support::http::{Failure, FailureKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long one request may take, from connecting to the end of its
/// answer, before it counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new connection for each request, closed after the answer.
    Close,
    /// This many persistent HTTP/1.1 connections, reused without pause.
    KeepAlive(usize),
}

/// One request: when it started (since the load began), how late against
/// the load's schedule, how long it took, and the pid that answered or the
/// kind of failure.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub start: Duration,
    /// From when the schedule said to start it to when it started: the
    /// load's own delay with a connection per request (its runtime was
    /// behind), and in keep-alive mode the wait for the answer before on
    /// its connection too (the server was behind).
    pub late: Duration,
    pub latency: Duration,
    pub outcome: Result<u32, FailureKind>,
}

/// What a run of the load saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub records: Vec<Record>,
    /// Keep-alive connections the server closed.
    pub closed_by_server: usize,
    /// Times a keep-alive connection was answered by another pid than the
    /// one before on it: the connection moved to another process.
    pub moved: usize,
    /// The first failure of each kind, to tell what happened.
    pub first_failures: Vec<Failure>,
}

impl Seen {
    fn note_failure(&mut self, failure: Failure) {
        if !self.first_failures.iter().any(|f| f.kind == failure.kind) {
            self.first_failures.push(failure);
        }
    }
}

/// The load, running on a runtime of its own until it is stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

impl Load {
    /// Starts `rate` requests a second to `addr` in `mode`; `t0` is when the
    /// load begins, the origin of every record's start.
    pub fn start(addr: SocketAddr, mode: Mode, rate: u32, t0: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the load's runtime");
                let period = Duration::from_secs_f64(1.0 / f64::from(rate));
                runtime.block_on(async move {
                    match mode {
                        Mode::Close => close_mode(addr, period, t0, stop).await,
                        Mode::KeepAlive(n) => keep_alive_mode(addr, period, n, t0, stop).await,
                    }
                })
            }
        });
        Load { stop, thread }
    }

    /// Stops starting requests, waits for those under way, and returns
    /// what was seen.
    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load's thread")
    }
}

/// A request every `period`, each on a connection of its own.
async fn close_mode(
    addr: SocketAddr,
    period: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Seen {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        while next <= now {
            let tx = tx.clone();
            let due = next.into_std();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = match timeout(REQUEST_TIMEOUT, get_closing(addr)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(timed_out()),
                };
                let late = started.saturating_duration_since(due);
                let _ = tx.send((started, late, started.elapsed(), outcome));
            });
            next += period;
        }
        tokio::time::sleep_until(next).await;
    }
    drop(tx);
    let mut seen = Seen::default();
    while let Some((started, late, latency, outcome)) = rx.recv().await {
        let outcome = outcome.map_err(|failure| {
            let kind = failure.kind;
            seen.note_failure(failure);
            kind
        });
        seen.records.push(Record {
            start: started.duration_since(t0),
            late,
            latency,
            outcome,
        });
    }
    seen.records.sort_by_key(|r| r.start);
    seen
}

fn timed_out() -> Failure {
    Failure {
        kind: FailureKind::TimedOut,
        detail: format!("no whole answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// One GET on a new connection that the server closes after its answer.
async fn get_closing(addr: SocketAddr) -> Result<u32, Failure> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::io("connect", &e))?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| Failure::io("send", &e))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| Failure::io("read", &e))?;
    let head_end = find(&answer, b"\r\n\r\n").ok_or_else(|| incomplete(&answer))?;
    let head = Head::parse(&answer[..head_end])?;
    head.pid_in(&answer[head_end + 4..])
}

/// An answer cut short: nothing at all, or a part of it.
fn incomplete(answer: &[u8]) -> Failure {
    Failure {
        kind: FailureKind::Empty,
        detail: if answer.is_empty() {
            "closed without an answer".into()
        } else {
            format!(
                "closed in the middle of an answer: {:?}",
                String::from_utf8_lossy(answer)
            )
        },
    }
}

fn bad(what: &str, bytes: &[u8]) -> Failure {
    Failure {
        kind: FailureKind::Bad,
        detail: format!("{what}: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the client needs of an answer's head.
struct Head {
    length: Option<usize>,
    closes: bool,
}

impl Head {
    /// A `200` head, its `Content-Length` and whether it says
    /// `Connection: close`.
    fn parse(head: &[u8]) -> Result<Head, Failure> {
        let text = std::str::from_utf8(head).map_err(|_| bad("a head not UTF-8", head))?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
            return Err(bad("not a 200", head));
        }
        let mut parsed = Head {
            length: None,
            closes: false,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad("a header without a colon", head));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                parsed.length = Some(value.parse().map_err(|_| bad("a bad length", head))?);
            } else if name.eq_ignore_ascii_case("connection") {
                parsed.closes = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(parsed)
    }

    /// The pid in a body that ends with `served by pid N`, and is as long
    /// as the head says.
    fn pid_in(&self, body: &[u8]) -> Result<u32, Failure> {
        if self.length.is_some_and(|n| n != body.len()) {
            return Err(bad("a body of another length than its head says", body));
        }
        let text = String::from_utf8_lossy(body);
        text.trim_end()
            .rsplit_once("served by pid ")
            .and_then(|(_, pid)| pid.parse().ok())
            .ok_or_else(|| bad("a body without `served by pid N`", body))
    }
}

/// `connections` keep-alive connections, which together send a request
/// every `period`.
async fn keep_alive_mode(
    addr: SocketAddr,
    period: Duration,
    connections: usize,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Seen {
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for k in 0..connections {
        let stop = stop.clone();
        // Staggered, so that the requests come evenly spread.
        let first = begin + period * k as u32;
        tasks.push(tokio::spawn(async move {
            connection_loop(addr, first, period * connections as u32, t0, stop).await
        }));
    }
    let mut seen = Seen::default();
    for task in tasks {
        let one = task.await.expect("a connection's task");
        seen.records.extend(one.records);
        seen.closed_by_server += one.closed_by_server;
        seen.moved += one.moved;
        for failure in one.first_failures {
            seen.note_failure(failure);
        }
    }
    seen.records.sort_by_key(|r| r.start);
    seen
}

/// One client connection, kept for request after request; replaced by a
/// new one when the server closes it or a request on it fails.
async fn connection_loop(
    addr: SocketAddr,
    mut next: tokio::time::Instant,
    period: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut stream: Option<TcpStream> = None;
    let mut last_pid = None;
    let mut buf = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        let due = next.into_std();
        next += period;
        if let Some(open) = &stream {
            if closed_while_idle(open) {
                seen.closed_by_server += 1;
                stream = None;
            }
        }
        let started = Instant::now();
        let outcome = timeout(REQUEST_TIMEOUT, async {
            if stream.is_none() {
                let fresh = TcpStream::connect(addr)
                    .await
                    .map_err(|e| Failure::io("connect", &e))?;
                fresh
                    .set_nodelay(true)
                    .map_err(|e| Failure::io("set TCP_NODELAY", &e))?;
                stream = Some(fresh);
                last_pid = None;
            }
            let open = stream.as_mut().expect("just opened");
            get_keeping(open, &mut buf).await
        })
        .await
        .unwrap_or_else(|_| Err(timed_out()));
        let latency = started.elapsed();
        let outcome = match outcome {
            Ok((pid, closes)) => {
                if last_pid.is_some_and(|last| last != pid) {
                    seen.moved += 1;
                }
                last_pid = Some(pid);
                if closes {
                    seen.closed_by_server += 1;
                    stream = None;
                }
                Ok(pid)
            }
            Err(failure) => {
                let kind = failure.kind;
                seen.note_failure(failure);
                stream = None;
                Err(kind)
            }
        };
        seen.records.push(Record {
            start: started.duration_since(t0),
            late: started.saturating_duration_since(due),
            latency,
            outcome,
        });
    }
    seen
}

/// Whether the server has closed an idle connection (its end of file is
/// waiting): then the next request would go nowhere, and a client opens a
/// new connection instead.
fn closed_while_idle(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // Its end, bytes no request asked for, or an error: nothing good
    // comes of this connection any more.
    !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// One GET on a kept connection: the pid that answered, and whether the
/// answer says the server closes the connection.
async fn get_keeping(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u32, bool), Failure> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| Failure::io("send", &e))?;
    buf.clear();
    let head_end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        read_more(stream, buf).await?;
    };
    let head = Head::parse(&buf[..head_end])?;
    let Some(length) = head.length else {
        return Err(bad(
            "a kept-alive answer without a length",
            &buf[..head_end],
        ));
    };
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        read_more(stream, buf).await?;
    }
    if buf.len() > body_start + length {
        return Err(bad("bytes after the answer", &buf[body_start + length..]));
    }
    let pid = head.pid_in(&buf[body_start..])?;
    Ok((pid, head.closes))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Failure> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err(incomplete(buf)),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(Failure::io("read", &e)),
    }
}
