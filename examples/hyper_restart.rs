//! An HTTP/1.1 server on hyper that restarts itself on SIGHUP, and whose
//! keep-alive connections move to the next generation instead of being
//! closed: a client that keeps its connection sees no close and no error,
//! and its next answer comes from the new process.
//!
//! ```sh
//! cargo run --features tokio --example hyper_restart -- 127.0.0.1:8080 &
//! curl http://127.0.0.1:8080/ http://127.0.0.1:8080/   # one connection
//! kill -HUP %1                                         # a new pid serves
//! ```
//!
//! Each answer's body ends with `served by pid N`. SIGTERM stops the
//! server, closing its connections gracefully, unless a next generation
//! started under the holder is there to take them (below).
//!
//! On SIGHUP the running generation starts the next with the listener and
//! one end of a new socket pair, `handoff` (`Restart::spawn_async`), and
//! serves and accepts on until the next one is ready. If the restart
//! fails, it simply serves on. Once the next generation is ready, this one
//! stops accepting (the next accepts from then on) and takes each
//! connection out of hyper once it owes its client nothing: the answer in
//! hand sent, no request half handled. hyper's `graceful_shutdown` and
//! `poll_without_shutdown` give back the socket and the bytes hyper had
//! read and not parsed (a request read in part). Each connection goes over
//! the handoff socket with those bytes, and the next generation serves it
//! as if it had accepted it.
//!
//! The connections go a few at a time (`IN_FLIGHT` at once): the next
//! generation acknowledges each one it has taken with a byte on the
//! handoff socket, and the others are served here until their turn. A
//! request sent on a connection in transit waits for the few ahead of it,
//! not for every connection to reach a process that has just started. A
//! next generation that sends no acknowledgement for `ACK_WAIT` gets the
//! rest without waiting.
//!
//! # Under the holder
//!
//! `hyper_restart [ADDR] [--holder SOCKET]`: with `--holder`, each
//! generation is started by `fdpass fetch` with the listener the holder
//! keeps, and the one serving is stopped with SIGTERM once the next is
//! ready; the connections move all the same.
//!
//! ```sh
//! fdpass hold /tmp/fds.sock &
//! fdpass listen tcp:127.0.0.1:8080 -- fdpass store /tmp/fds.sock http 3
//! fdpass fetch /tmp/fds.sock http -- hyper_restart --holder /tmp/fds.sock &
//! old=$!
//! # later: start the next generation; once it is ready, stop the old one
//! fdpass fetch /tmp/fds.sock http -- hyper_restart --holder /tmp/fds.sock &
//! kill $old
//! ```
//!
//! (`cargo build --release --features tokio --example hyper_restart`
//! builds it in `target/release/examples/`.)
//!
//! Each generation makes a socket pair and leaves one end in the holder
//! under the name `handoff`, held until it exits. The next generation
//! takes that end out of the holder (a take: no one else can have it),
//! checks that a process of its own user made it, says hello on it, and
//! leaves an end of its own for the generation after it. On SIGTERM, a
//! generation that heard a hello hands each connection over that socket
//! once it owes its client nothing, as on SIGHUP, and exits once all have
//! gone; one that heard none closes them gracefully. A next generation that
//! goes away before or after its hello (its end closes), or leaves first
//! (it shuts its end for writing: a goodbye), is forgotten, and a new end
//! goes to the holder for another (so does one dropped from the holder);
//! one that goes away during the hand-over
//! leaves the connections not yet sent to be closed gracefully. Start each
//! generation with `fetch ... http`, never with `handoff`: the generation
//! takes that itself.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_restart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("hyper_restart: this example passes fds by the Unix socket-activation convention");
}

#[cfg(unix)]
mod unix {
    use std::convert::Infallible;
    use std::ffi::OsString;
    use std::future::Future;
    use std::io::{self, ErrorKind, Write};
    use std::os::fd::{AsFd, OwnedFd};
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use io_fdpass::activation::ListenFds;
    use io_fdpass::holder::protocol::Lifetime;
    use io_fdpass::holder::Client;
    use io_fdpass::notify;
    use io_fdpass::restart::{Restart, Successor};
    use io_fdpass::{FdKind, PeerTrust, SocketInfo};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::{TcpListener, TcpStream, UnixStream};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::{mpsc, watch, Semaphore};
    use tokio::task::{JoinHandle, JoinSet};

    /// The name of the socket on which the previous generation sends its
    /// connections: among the fds of a restart, and in the holder.
    const HANDOFF: &str = "handoff";

    /// What a generation started under the holder says on the socket it
    /// took there: it is the next generation, and takes the connections.
    const HELLO: u8 = b'H';

    /// The most bytes a connection may carry that hyper had read and not
    /// parsed: more than any request head hyper accepts.
    const MAX_PENDING: usize = 1 << 20;

    /// How long the next generation may take to take one connection.
    const SEND_TIMEOUT: Duration = Duration::from_secs(10);

    /// The most connections on their way to the next generation at once:
    /// the others are served here meanwhile. The next generation says it
    /// has taken each with an [`ACK`]; a request sent on a connection in
    /// transit waits for the few ahead of it, not for all.
    const IN_FLIGHT: usize = 4;

    /// What the next generation says on the handoff socket for each
    /// connection it has taken and serves.
    const ACK: u8 = b'A';

    /// How long the hand-over waits for the next [`ACK`]; past it, as from
    /// a next generation that never acknowledges, the rest go without
    /// waiting.
    const ACK_WAIT: Duration = Duration::from_secs(1);

    const USAGE: &str = "usage: hyper_restart [ADDR] [--holder SOCKET]";

    /// The command line.
    struct Options {
        /// Where to listen when no listener is inherited.
        addr: String,
        /// The socket of the `fdpass hold` that keeps the listener.
        holder: Option<OsString>,
    }

    impl Options {
        fn parse(args: impl IntoIterator<Item = OsString>) -> io::Result<Options> {
            let usage =
                |what: &str| io::Error::new(ErrorKind::InvalidInput, format!("{what}; {USAGE}"));
            let mut options = Options {
                addr: "127.0.0.1:8080".into(),
                holder: None,
            };
            let mut addr_given = false;
            let mut args = args.into_iter();
            while let Some(arg) = args.next() {
                if arg == "--holder" {
                    let socket = args
                        .next()
                        .ok_or_else(|| usage("--holder needs the holder's socket"))?;
                    options.holder = Some(socket);
                } else if addr_given || arg.to_str().is_none_or(|a| a.starts_with('-')) {
                    return Err(usage(&format!("unexpected argument {}", arg.display())));
                } else {
                    options.addr = arg.to_string_lossy().into_owned();
                    addr_given = true;
                }
            }
            Ok(options)
        }
    }

    pub fn main() -> io::Result<()> {
        let options = Options::parse(std::env::args_os().skip(1))?;
        // Before any thread starts: the adoption changes the environment.
        let mut inherited = ListenFds::take()?;
        let (listener, first) = match inherited.take_only_tcp_listener()? {
            Some(listener) => (listener, false),
            None => (std::net::TcpListener::bind(&options.addr)?, true),
        };
        // The connections come from the generation that restarted into
        // this one, or from the one that left its end in the holder.
        let mut previous = match inherited.index_of(HANDOFF) {
            Some(i) => Some(checked_peer(inherited.take_unix_stream(i)?)?),
            None => None,
        };
        let mut next = None;
        let holder = options.holder.map(Client::new);
        if let Some(holder) = &holder {
            if previous.is_none() {
                previous = join_previous(holder)?;
            }
            next = Some(leave_handoff(holder)?);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve(listener, previous, first, holder.zip(next)))
    }

    /// `socket`, on which connections are to come, if the process that
    /// made it (its pair's creator: the previous generation) runs as this
    /// process's user or root.
    fn checked_peer(
        socket: std::os::unix::net::UnixStream,
    ) -> io::Result<std::os::unix::net::UnixStream> {
        let maker = io_fdpass::peer_credentials(&socket)?;
        PeerTrust::new().check(&maker).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the {HANDOFF} socket was made by a process this one does not trust: {e}"),
            )
        })?;
        Ok(socket)
    }

    /// The previous generation's end of its handoff socket, taken out of
    /// the holder, with a hello said on it: the previous generation sends
    /// its connections over it when it stops. `None` when the holder holds
    /// none, or its maker is gone.
    fn join_previous(holder: &Client) -> io::Result<Option<std::os::unix::net::UnixStream>> {
        // Told apart first: a holder that does not answer, and one that
        // holds no handoff (the first generation).
        if !holder.list()?.iter().any(|name| name == HANDOFF) {
            return Ok(None);
        }
        let fd = match holder.take(HANDOFF) {
            Ok(fd) => fd,
            // Taken or dropped since the list.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = format!("the holder's {HANDOFF}");
        let fd = checked_kind(
            fd,
            SocketInfo::is_unix_stream,
            &what,
            "a connected unix stream socket",
        )?;
        let previous = checked_peer(fd.into())?;
        previous.set_nonblocking(true)?;
        match (&previous).write(&[HELLO]) {
            Ok(_) => Ok(Some(previous)),
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                eprintln!("hyper_restart: the generation that left the {HANDOFF} socket is gone");
                Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "the holder's {HANDOFF} socket is full: no generation of this server left it"
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// `fd`, if it is a socket that `is` accepts; otherwise closed, with
    /// an error that says what `what` is instead of `wanted`.
    fn checked_kind(
        fd: OwnedFd,
        is: fn(&SocketInfo) -> bool,
        what: &str,
        wanted: &str,
    ) -> io::Result<OwnedFd> {
        let kind = FdKind::of(&fd)?;
        if kind.socket().is_some_and(is) {
            return Ok(fd);
        }
        Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("{what} is a {}, not {wanted}", kind.word()),
        ))
    }

    /// Leaves one end of a new socket pair in the holder for the next
    /// generation, held until this process exits, and returns the other,
    /// on which the next says hello.
    fn leave_handoff(holder: &Client) -> io::Result<std::os::unix::net::UnixStream> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        // Only a hello comes this way.
        io_fdpass::refuse_fds(&ours)?;
        let lifetime = Lifetime::forever().until_exit(std::process::id());
        holder.store_with_lifetime(HANDOFF, &theirs, lifetime)?;
        Ok(ours)
    }

    /// What this generation knows of a next one under the holder.
    enum Link {
        /// None can find this generation: no holder, or the holder no
        /// longer holds its end.
        Unreachable,
        /// Its end is in the holder, and no next generation said hello.
        Waiting(UnixStream),
        /// A next generation said hello: it takes the connections when
        /// this one is told to stop.
        Joined(UnixStream),
        /// The one that said hello went: a new end goes to the holder.
        Leaving(JoinHandle<io::Result<std::os::unix::net::UnixStream>>),
    }

    /// The next generation under the holder, if this one has a holder.
    struct Next {
        holder: Option<Client>,
        link: Link,
    }

    impl Next {
        /// With `ours`, the end of the pair whose other end is in
        /// `holder`.
        fn new(holder: Option<(Client, std::os::unix::net::UnixStream)>) -> io::Result<Next> {
            Ok(match holder {
                Some((holder, ours)) => Next {
                    holder: Some(holder),
                    link: Next::waiting(ours)?,
                },
                None => Next {
                    holder: None,
                    link: Link::Unreachable,
                },
            })
        }

        fn waiting(ours: std::os::unix::net::UnixStream) -> io::Result<Link> {
            ours.set_nonblocking(true)?;
            Ok(Link::Waiting(UnixStream::from_std(ours)?))
        }

        /// Returns once there is news: the socket has something to say
        /// (`None`), or the new end is in the holder, or not. Never while
        /// there is no socket and no new end on its way.
        async fn news(&mut self) -> Option<io::Result<std::os::unix::net::UnixStream>> {
            match &mut self.link {
                Link::Waiting(socket) | Link::Joined(socket) => {
                    // An error shows in the read that follows.
                    let _ = socket.readable().await;
                    None
                }
                Link::Leaving(task) => {
                    Some(task.await.map_err(io::Error::other).and_then(|left| left))
                }
                Link::Unreachable => std::future::pending().await,
            }
        }

        /// Takes in what [`Next::news`] returned.
        fn update(&mut self, news: Option<io::Result<std::os::unix::net::UnixStream>>) {
            match news {
                None => self.hear(),
                Some(left) => {
                    self.link = left.and_then(Next::waiting).unwrap_or_else(|e| {
                        eprintln!(
                            "hyper_restart: no next generation can take the connections: {e}"
                        );
                        Link::Unreachable
                    });
                }
            }
        }

        /// The socket to the next generation, if one said hello, even
        /// with the signal that asks for it; this generation forgets it.
        fn take_joined(&mut self) -> Option<UnixStream> {
            self.hear();
            match std::mem::replace(&mut self.link, Link::Unreachable) {
                Link::Joined(out) => Some(out),
                _ => None,
            }
        }

        /// Forgets the next generation: its socket closes.
        fn forget(&mut self) {
            self.link = Link::Unreachable;
        }

        /// Reads what the socket says, without waiting, and changes what
        /// this generation knows by it.
        fn hear(&mut self) {
            let Some(holder) = &self.holder else { return };
            let (socket, mut joined) = match std::mem::replace(&mut self.link, Link::Unreachable) {
                Link::Waiting(socket) => (socket, false),
                Link::Joined(socket) => (socket, true),
                other => {
                    self.link = other;
                    return;
                }
            };
            let mut said = [0u8; 16];
            loop {
                let gone = match socket.try_read(&mut said) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Ok(1) if !joined && said[0] == HELLO => {
                        eprintln!("hyper_restart: a next generation is there: it takes the connections when this one stops");
                        joined = true;
                        continue;
                    }
                    // Taken by a process that went before its hello, or
                    // dropped from the holder: either way the holder has
                    // no end of this generation's any more.
                    Ok(0) if !joined => "closed without a hello".to_owned(),
                    Ok(0) => "went away".to_owned(),
                    Ok(n) if joined => format!("sent {n} byte(s) after its hello"),
                    Ok(n) => format!("sent {n} byte(s) that are not a hello"),
                    Err(e) => format!("is unreadable: {e}"),
                };
                // Whoever took the end from the holder is no next
                // generation now: leave a new one for another.
                eprintln!("hyper_restart: the peer on the {HANDOFF} socket {gone}; a new one goes to the holder");
                let holder = holder.clone();
                self.link =
                    Link::Leaving(tokio::task::spawn_blocking(move || leave_handoff(&holder)));
                return;
            }
            self.link = if joined {
                Link::Joined(socket)
            } else {
                Link::Waiting(socket)
            };
        }
    }

    /// The connections this generation serves, those the previous one
    /// still sends, and what they are told to do.
    struct Connections {
        running: JoinSet<Option<Parked>>,
        moved: mpsc::UnboundedReceiver<(TcpStream, Vec<u8>)>,
        /// Until the previous generation has sent its last connection.
        receiving: bool,
        /// The socket the previous generation sends on, until this one
        /// says goodbye on it: each connection taken is acknowledged there.
        previous: Option<std::os::unix::net::UnixStream>,
        /// Leave for connections to go to the next generation: none until
        /// the hand-over, then [`IN_FLIGHT`], and one more for each
        /// [`ACK`]; closed (no bound) once the next generation can no
        /// longer acknowledge.
        permits: Arc<Semaphore>,
        orders: (watch::Sender<Order>, watch::Receiver<Order>),
    }

    impl Connections {
        /// With those that come on `previous`, from the previous
        /// generation.
        fn new(previous: Option<std::os::unix::net::UnixStream>) -> io::Result<Connections> {
            let (moved_tx, moved) = mpsc::unbounded_channel();
            let receiving = previous.is_some();
            let mut goodbye = None;
            if let Some(previous) = previous {
                previous.set_nonblocking(true)?;
                goodbye = Some(previous.try_clone()?);
                tokio::spawn(receive(UnixStream::from_std(previous)?, moved_tx));
            }
            Ok(Connections {
                running: JoinSet::new(),
                moved,
                receiving,
                previous: goodbye,
                orders: watch::channel(Order::Serve),
                permits: Arc::new(Semaphore::new(0)),
            })
        }

        /// Tells the previous generation that this one leaves: an end of
        /// file after its hello. One that has not begun to hand its
        /// connections over forgets this one and closes the socket, which
        /// ends the wait for them; one that has goes on, and this one
        /// takes every connection it sends.
        fn say_goodbye(&mut self) {
            if let Some(previous) = self.previous.take() {
                // An error means the previous generation is gone: it has
                // nothing more to send.
                let _ = previous.shutdown(std::net::Shutdown::Write);
            }
        }

        /// Serves `stream`, starting with `pending`, as ordered.
        fn serve(&mut self, stream: TcpStream, pending: Vec<u8>) {
            let orders = self.orders.1.clone();
            self.running
                .spawn(connection(stream, pending, orders, self.permits.clone()));
        }

        /// Takes in what the previous generation sent: a connection, or
        /// the end.
        fn moved_in(&mut self, got: Option<(TcpStream, Vec<u8>)>) {
            match got {
                Some((stream, pending)) => {
                    self.serve(stream, pending);
                    if let Some(previous) = &self.previous {
                        // Never blocks: the socket is non-blocking. A
                        // previous generation that is gone needs none.
                        let _ = (&*previous).write(&[ACK]);
                    }
                }
                None => self.receiving = false,
            }
        }

        fn order(&self, order: Order) {
            self.orders.0.send_replace(order);
        }

        /// Whether every connection went, and none is to come.
        fn all_gone(&self) -> bool {
            self.running.is_empty() && !self.receiving
        }

        /// Has every connection closed once its answer in hand is sent,
        /// those still to come from the previous generation too, and
        /// returns once all have.
        async fn close_all(mut self) {
            self.say_goodbye();
            self.order(Order::Stop);
            while !self.all_gone() {
                tokio::select! {
                    // A connection parked before the order owes its
                    // client nothing: it closes as it drops.
                    Some(_) = self.running.join_next() => {}
                    got = self.moved.recv(), if self.receiving => self.moved_in(got),
                }
            }
        }
    }

    /// A connection taken out of hyper between two requests, and the bytes
    /// read from it that hyper had not parsed.
    struct Parked {
        stream: std::net::TcpStream,
        pending: Vec<u8>,
    }

    /// A restart under way: the next generation starting, and this end of
    /// the socket on which it will get the connections.
    type Restarting = (
        Pin<Box<dyn Future<Output = io::Result<Successor>> + Send>>,
        std::os::unix::net::UnixStream,
    );

    async fn serve(
        listener: std::net::TcpListener,
        previous: Option<std::os::unix::net::UnixStream>,
        first: bool,
        holder: Option<(Client, std::os::unix::net::UnixStream)>,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = Some(TcpListener::from_std(listener)?);
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut connections = Connections::new(previous)?;
        let mut next = Next::new(holder)?;
        // Ready only now that SIGHUP restarts rather than kills.
        if first {
            let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
            println!("listening on {}", addr.expect("listening"));
        }
        notify::ready()?;

        let mut restarting: Option<Restarting> = None;
        let mut handing_over: Option<UnixStream> = None;
        let mut acks = Acks::default();
        loop {
            tokio::select! {
                accepted = async { listener.as_ref().expect("guarded").accept().await },
                    if listener.is_some() =>
                {
                    connections.serve(accepted?.0, Vec::new());
                }
                got = connections.moved.recv(), if connections.receiving => connections.moved_in(got),
                acked = acks.next(), if acks.is_open() => match acked {
                    Some(n) => connections.permits.add_permits(n),
                    // The rest go without waiting.
                    None => connections.permits.close(),
                },
                news = next.news() => next.update(news),
                _ = hangup.recv(), if restarting.is_none() && handing_over.is_none() => {
                    // This generation goes on serving, and accepting,
                    // while the next one starts.
                    restarting = Some(restart(listener.as_ref().expect("serving"))?);
                }
                done = async { restarting.as_mut().expect("guarded").0.as_mut().await },
                    if restarting.is_some() =>
                {
                    let (_, ours) = restarting.take().expect("guarded");
                    match done {
                        Ok(successor) => {
                            eprintln!("restart: pid {} serves now", successor.pid());
                            // It leaves its own end in the holder.
                            next.forget();
                            ours.set_nonblocking(true)?;
                            handing_over = Some(UnixStream::from_std(ours)?);
                        }
                        Err(e) => eprintln!("restart: still serving, the restart failed: {e}"),
                    }
                }
                Some(ended) = connections.running.join_next() => {
                    if let (Ok(Some(parked)), Some(out)) = (ended, handing_over.as_mut()) {
                        if let Err(e) = send(out, parked).await {
                            // The connection is closed with this socket;
                            // the others once they owe nothing.
                            eprintln!("hyper_restart: the next generation takes no more connections: {e}");
                            break;
                        }
                    }
                }
                _ = terminate.recv(), if restarting.is_none() => {
                    // Told again while handing over: the connections not
                    // handed over yet are closed gracefully.
                    if handing_over.is_some() {
                        break;
                    }
                    // A next generation that said hello takes the
                    // connections; with none, they are closed gracefully.
                    match next.take_joined() {
                        Some(out) => handing_over = Some(out),
                        None => break,
                    }
                }
            }
            if let (Some(out), Some(_)) = (&handing_over, &listener) {
                // The next generation accepts from now on, and each
                // connection goes to it once it owes its client nothing,
                // a few at a time.
                listener = None;
                acks = Acks::on(out)?;
                connections.say_goodbye();
                connections.permits.add_permits(IN_FLIGHT);
                connections.order(Order::HandOver);
            }
            if handing_over.is_some() && connections.all_gone() {
                // Every connection went; closing the socket tells the next
                // generation so.
                return Ok(());
            }
        }
        // Stop accepting. Closing the sockets tells a next generation that
        // no connection comes.
        drop((listener, next, handing_over));
        connections.close_all().await;
        Ok(())
    }

    /// Starts the next generation with `listener` and a socket for the
    /// connections; this generation goes on serving meanwhile.
    fn restart(listener: &TcpListener) -> io::Result<Restarting> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let next = Restart::new()?.fd("http", listener)?.fd(HANDOFF, &theirs)?;
        drop(theirs);
        // `spawn_async` forks on a blocking thread: the requests in hand
        // are not held up meanwhile.
        Ok((Box::pin(next.spawn_async()), ours))
    }

    /// The socket on which the next generation acknowledges each
    /// connection it takes, while it can, and when the next is due.
    #[derive(Default)]
    struct Acks {
        socket: Option<UnixStream>,
        due: Option<tokio::time::Instant>,
    }

    impl Acks {
        /// On a copy of `out`, the socket the connections go on.
        fn on(out: &UnixStream) -> io::Result<Acks> {
            let socket = UnixStream::from_std(out.as_fd().try_clone_to_owned()?.into())?;
            Ok(Acks {
                socket: Some(socket),
                due: Some(tokio::time::Instant::now() + ACK_WAIT),
            })
        }

        fn is_open(&self) -> bool {
            self.socket.is_some()
        }

        /// How many connections the next generation has acknowledged
        /// since the last call (one byte each), or `None` once it can say
        /// no more: its end closed or shut for writing, or nothing said
        /// for [`ACK_WAIT`].
        async fn next(&mut self) -> Option<usize> {
            let socket = self.socket.as_ref()?;
            let due = self.due?;
            let mut said = [0u8; 64];
            let heard = tokio::time::timeout_at(due, async {
                loop {
                    socket.readable().await.ok()?;
                    match socket.try_read(&mut said) {
                        Ok(0) => return None,
                        Ok(n) => return Some(n),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return None,
                    }
                }
            })
            .await
            .unwrap_or_else(|_| {
                eprintln!("hyper_restart: the next generation acknowledged no connection for {ACK_WAIT:?}: the rest go without waiting");
                None
            });
            match heard {
                Some(_) => self.due = Some(tokio::time::Instant::now() + ACK_WAIT),
                None => *self = Acks::default(),
            }
            heard
        }
    }

    /// Sends one connection to the next generation: its fd, with the
    /// length of its pending bytes and the bytes after it, within
    /// [`SEND_TIMEOUT`].
    async fn send(out: &mut UnixStream, parked: Parked) -> io::Result<()> {
        let mut frame = u32::try_from(parked.pending.len())
            .map_err(io::Error::other)?
            .to_le_bytes()
            .to_vec();
        frame.extend_from_slice(&parked.pending);
        let sending = async {
            let sent = io_fdpass::tokio::send_fds(&*out, &frame, &[parked.stream.as_fd()]).await?;
            out.write_all(&frame[sent..]).await
        };
        tokio::time::timeout(SEND_TIMEOUT, sending)
            .await
            .map_err(|_| {
                io::Error::new(
                    ErrorKind::TimedOut,
                    format!("it took no connection within {SEND_TIMEOUT:?}"),
                )
            })?
    }

    /// Takes the connections the previous generation sends, until it
    /// closes the socket, and passes them on to be served.
    async fn receive(mut handoff: UnixStream, moved: mpsc::UnboundedSender<(TcpStream, Vec<u8>)>) {
        loop {
            match receive_one(&mut handoff).await {
                Ok(Some(connection)) => {
                    if moved.send(connection).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("hyper_restart: the connections of the previous generation: {e}");
                    return;
                }
            }
        }
    }

    /// One connection from the previous generation, or `None` at the end.
    async fn receive_one(handoff: &mut UnixStream) -> io::Result<Option<(TcpStream, Vec<u8>)>> {
        let mut header = [0u8; 4];
        let mut fds = [None];
        let got = io_fdpass::tokio::recv_fds(&*handoff, &mut header, &mut fds).await?;
        if got.bytes == 0 && got.fds_received == 0 {
            return Ok(None);
        }
        let Some(fd) = fds[0].take() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a connection's header came without its fd",
            ));
        };
        let stream: std::net::TcpStream = checked_kind(
            fd,
            SocketInfo::is_tcp_stream,
            "a connection received",
            "a TCP connection",
        )?
        .into();
        handoff.read_exact(&mut header[got.bytes..]).await?;
        let length = u32::from_le_bytes(header) as usize;
        if length > MAX_PENDING {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a connection with {length} pending bytes, more than {MAX_PENDING}"),
            ));
        }
        let mut pending = vec![0; length];
        handoff.read_exact(&mut pending).await?;
        stream.set_nonblocking(true)?;
        Ok(Some((TcpStream::from_std(stream)?, pending)))
    }

    /// What the connections are told to do.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Order {
        Serve,
        /// Stop between two requests and come back out of hyper.
        HandOver,
        /// Close once the answer in hand is sent, handing over or not.
        Stop,
    }

    /// Serves one connection, starting with `pending`, until its client
    /// closes it, or until it is parked for the next generation when
    /// `orders` says so.
    async fn connection(
        stream: TcpStream,
        pending: Vec<u8>,
        mut orders: watch::Receiver<Order>,
        permits: Arc<Semaphore>,
    ) -> Option<Parked> {
        let gate = Arc::new(Gate::default());
        let io = TokioIo::new(Gated {
            stream,
            pending,
            read: 0,
            gate: gate.clone(),
        });
        let mut conn = http1::Builder::new().serve_connection(
            io,
            service_fn({
                let gate = gate.clone();
                move |request| answer(request, Busy::enter(&gate))
            }),
        );
        let mut stop_orders = orders.clone();
        let mut told = pin!(orders.wait_for(|order| *order != Order::Serve));
        // A hand-over can give way to a stop.
        let mut stopped = pin!(stop_orders.wait_for(|order| *order == Order::Stop));
        // Until it is this connection's turn to go, it is served here.
        let mut turn = pin!(permits.acquire());
        let mut took_permit = false;
        let mut order = Order::Serve;
        let done = std::future::poll_fn(|cx| {
            if order == Order::Serve {
                if let Poll::Ready(Ok(new)) = told.as_mut().poll(cx) {
                    order = *new;
                    if order != Order::HandOver {
                        Pin::new(&mut conn).graceful_shutdown();
                    }
                }
            }
            if order == Order::HandOver && !gate.stopping.load(Ordering::SeqCst) {
                // A closed semaphore bounds nothing any more.
                if let Poll::Ready(permit) = turn.as_mut().poll(cx) {
                    if let Ok(permit) = permit {
                        permit.forget();
                        took_permit = true;
                    }
                    gate.stopping.store(true, Ordering::SeqCst);
                }
            }
            if order == Order::HandOver {
                if let Poll::Ready(Ok(_)) = stopped.as_mut().poll(cx) {
                    order = Order::Stop;
                    gate.stopping.store(false, Ordering::SeqCst);
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
            if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(result.is_ok());
            }
            if order == Order::HandOver
                && gate.stopping.load(Ordering::SeqCst)
                && gate.owes_nothing()
            {
                // Idle between two requests: hyper closes its side of the
                // connection at once, and gives the socket back.
                Pin::new(&mut conn).graceful_shutdown();
                let _ = conn.poll_without_shutdown(cx);
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await;
        if order != Order::HandOver || !done {
            if took_permit {
                // It does not go: its turn goes to another.
                permits.add_permits(1);
            }
            return None;
        }
        let parts = conn.into_parts();
        let gated = parts.io.into_inner();
        // What hyper read and did not parse, then what it never read of the
        // bytes it was started with.
        let mut pending = parts.read_buf.to_vec();
        pending.extend_from_slice(&gated.pending[gated.read..]);
        let stream = gated.stream.into_std().ok()?;
        Some(Parked { stream, pending })
    }

    /// An answer to come.
    type Answer = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

    /// Answers a request, its body read whole, with this process's pid.
    fn answer(request: Request<Incoming>, busy: Busy) -> Answer {
        Box::pin(async move {
            // A body that cannot be read leaves the request answered all
            // the same.
            let _ = request.into_body().collect().await;
            let body = format!("served by pid {}\n", std::process::id());
            drop(busy);
            Ok(Response::new(Full::new(Bytes::from(body))))
        })
    }

    /// What one connection's socket and its service tell each other.
    #[derive(Default)]
    struct Gate {
        /// Set when the connection is to be handed over: from then on, a
        /// read between two requests waits forever.
        stopping: AtomicBool,
        /// A read waits because of `stopping`.
        parked: AtomicBool,
        /// A write or a flush is waiting for room in the socket.
        writing: AtomicBool,
        /// Requests being handled.
        busy: AtomicUsize,
    }

    impl Gate {
        /// Whether hyper waits for the next request, with no request in
        /// hand and nothing left to send.
        fn owes_nothing(&self) -> bool {
            self.parked.load(Ordering::SeqCst)
                && self.busy.load(Ordering::SeqCst) == 0
                && !self.writing.load(Ordering::SeqCst)
        }
    }

    /// A request being handled, from the call of the service to its
    /// answer.
    struct Busy(Arc<Gate>);

    impl Busy {
        fn enter(gate: &Arc<Gate>) -> Busy {
            gate.busy.fetch_add(1, Ordering::SeqCst);
            Busy(gate.clone())
        }
    }

    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The socket as hyper sees it: first the bytes the previous
    /// generation had read, then the socket; and once the connection is
    /// to be handed over, no more reads between two requests.
    struct Gated {
        stream: TcpStream,
        pending: Vec<u8>,
        read: usize,
        gate: Arc<Gate>,
    }

    impl AsyncRead for Gated {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = &mut *self;
            if this.gate.stopping.load(Ordering::SeqCst)
                && this.gate.busy.load(Ordering::SeqCst) == 0
            {
                // Whatever comes now is the next generation's to read.
                this.gate.parked.store(true, Ordering::SeqCst);
                return Poll::Pending;
            }
            if this.read < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.read);
                buf.put_slice(&this.pending[this.read..this.read + n]);
                this.read += n;
                return Poll::Ready(Ok(()));
            }
            Pin::new(&mut this.stream).poll_read(cx, buf)
        }
    }

    impl Gated {
        fn note_write<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
            self.gate.writing.store(poll.is_pending(), Ordering::SeqCst);
            poll
        }
    }

    impl AsyncWrite for Gated {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
            self.note_write(poll)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
            self.note_write(poll)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let poll = Pin::new(&mut self.stream).poll_flush(cx);
            self.note_write(poll)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }
}
