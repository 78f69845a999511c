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
//! server, closing its connections gracefully.
//!
//! On SIGHUP the running generation stops accepting (the kernel queues new
//! connections on the listener meanwhile) and takes each connection out of
//! hyper once it owes its client nothing: the answer in hand sent, no
//! request half handled. hyper's `graceful_shutdown` and
//! `poll_without_shutdown` give back the socket and the bytes hyper had
//! read and not parsed (a request read in part). The listener and every
//! connection with those bytes go to the next generation
//! ([`Restart::connection`]), which takes them back
//! ([`take_tcp_connection`]) and serves them as if it had accepted them. If
//! the restart fails, this generation takes them back and serves on.

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
    use std::future::Future;
    use std::io;
    use std::os::fd::AsFd;
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use io_fdpass::activation::ListenFds;
    use io_fdpass::notify;
    use io_fdpass::restart::{Restart, Successor};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::{TcpListener, TcpStream, UnixStream};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::{mpsc, watch};
    use tokio::task::JoinSet;

    /// The name of the socket on which the previous generation sends its
    /// connections, once this one is ready.
    const HANDOFF: &str = "handoff";

    /// The most bytes a connection may carry that hyper had read and not
    /// parsed: more than any request head hyper accepts.
    const MAX_PENDING: usize = 1 << 20;

    pub fn main() -> io::Result<()> {
        // Before any thread starts: the adoption changes the environment.
        let mut inherited = ListenFds::take()?;
        let (listener, first) = match inherited.take_only_tcp_listener()? {
            Some(listener) => (listener, false),
            None => {
                let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
                (std::net::TcpListener::bind(addr)?, true)
            }
        };
        let handoff = match inherited.index_of(HANDOFF) {
            Some(i) => Some(inherited.take_unix_stream(i)?),
            None => None,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve(listener, handoff, first))
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
        handoff: Option<std::os::unix::net::UnixStream>,
        first: bool,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = Some(TcpListener::from_std(listener)?);
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let orders = watch::channel(Order::Serve);
        let mut connections = JoinSet::new();
        let (moved_tx, mut moved) = mpsc::unbounded_channel();
        if let Some(handoff) = handoff {
            handoff.set_nonblocking(true)?;
            tokio::spawn(receive(UnixStream::from_std(handoff)?, moved_tx));
        }
        // Ready only now that SIGHUP restarts rather than kills.
        if first {
            let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
            println!("listening on {}", addr.expect("listening"));
        }
        notify::ready()?;

        let mut restarting: Option<Restarting> = None;
        let mut handing_over: Option<UnixStream> = None;
        loop {
            tokio::select! {
                accepted = async { listener.as_ref().expect("guarded").accept().await },
                    if listener.is_some() =>
                {
                    let (stream, _) = accepted?;
                    connections.spawn(connection(stream, Vec::new(), orders.1.clone()));
                }
                Some((stream, pending)) = moved.recv() => {
                    connections.spawn(connection(stream, pending, orders.1.clone()));
                }
                _ = hangup.recv(), if restarting.is_none() && handing_over.is_none() => {
                    // This generation goes on serving, and accepting,
                    // while the next one starts.
                    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                    let next = Restart::new()?
                        .fd("http", listener.as_ref().expect("serving"))?
                        .fd(HANDOFF, &theirs)?;
                    drop(theirs);
                    // `spawn_async` forks on a blocking thread: the
                    // requests in hand are not held up meanwhile.
                    restarting = Some((Box::pin(next.spawn_async()), ours));
                }
                done = async { restarting.as_mut().expect("guarded").0.as_mut().await },
                    if restarting.is_some() =>
                {
                    let (_, ours) = restarting.take().expect("guarded");
                    match done {
                        Ok(next) => {
                            eprintln!("restart: pid {} serves now", next.pid());
                            // The next generation accepts from now on, and
                            // each connection goes to it once it owes its
                            // client nothing.
                            listener = None;
                            orders.0.send_replace(Order::HandOver);
                            ours.set_nonblocking(true)?;
                            handing_over = Some(UnixStream::from_std(ours)?);
                        }
                        Err(e) => eprintln!("restart: still serving, the restart failed: {e}"),
                    }
                }
                Some(ended) = connections.join_next() => {
                    if let (Ok(Some(parked)), Some(out)) = (ended, handing_over.as_mut()) {
                        if let Err(e) = send(out, parked).await {
                            eprintln!("hyper_restart: a connection is lost: {e}");
                        }
                    }
                }
                _ = terminate.recv() => {
                    orders.0.send_replace(Order::Stop);
                    break;
                }
            }
            if handing_over.is_some() && connections.is_empty() {
                // Every connection went; closing the socket tells the next
                // generation so.
                return Ok(());
            }
        }
        // Stop accepting; hyper closes each connection once its answer in
        // hand is sent.
        drop(listener);
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    /// Sends one connection to the next generation: its fd, with the
    /// length of its pending bytes and the bytes after it.
    async fn send(out: &mut UnixStream, parked: Parked) -> io::Result<()> {
        let mut frame = u32::try_from(parked.pending.len())
            .map_err(io::Error::other)?
            .to_le_bytes()
            .to_vec();
        frame.extend_from_slice(&parked.pending);
        let sent = io_fdpass::tokio::send_fds(&*out, &frame, &[parked.stream.as_fd()]).await?;
        out.write_all(&frame[sent..]).await
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
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        Ok(Some((TcpStream::from_std(stream)?, pending)))
    }

    /// What the connections are told to do.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Order {
        Serve,
        /// Stop between two requests and come back out of hyper.
        HandOver,
        /// Close once the answer in hand is sent.
        Stop,
    }

    /// Serves one connection, starting with `pending`, until its client
    /// closes it, or until it is parked for the next generation when
    /// `orders` says so.
    async fn connection(
        stream: TcpStream,
        pending: Vec<u8>,
        mut orders: watch::Receiver<Order>,
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
        let mut told = pin!(orders.wait_for(|order| *order != Order::Serve));
        let mut order = Order::Serve;
        let done = std::future::poll_fn(|cx| {
            if order == Order::Serve {
                if let Poll::Ready(Ok(new)) = told.as_mut().poll(cx) {
                    order = *new;
                    match order {
                        Order::HandOver => gate.stopping.store(true, Ordering::SeqCst),
                        _ => Pin::new(&mut conn).graceful_shutdown(),
                    }
                }
            }
            if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(result.is_ok());
            }
            if order == Order::HandOver && gate.owes_nothing() {
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
