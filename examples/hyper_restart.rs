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
    use io_fdpass::restart::{take_tcp_connection, Restart};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::watch;
    use tokio::task::JoinSet;

    /// The name under which each connection goes to the next generation.
    const CONNECTION: &str = "connection";

    /// At most this many connections move: each takes an fd, and its
    /// pending bytes another, within the fds one start may pass. The others
    /// are closed, between two requests, as a server closes idle
    /// keep-alive connections.
    const MOVED_AT_MOST: usize = (io_fdpass::MAX_FDS - 1) / 2;

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
        let mut moved = Vec::new();
        for i in 0..inherited.len() {
            if inherited.name(i) == Some(CONNECTION) {
                // A connection whose bytes were damaged on the way is
                // closed, and the others served.
                match take_tcp_connection(&mut inherited, i) {
                    Ok(connection) => moved.push(connection),
                    Err(e) => eprintln!("hyper_restart: a connection is lost: {e}"),
                }
            }
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve(listener, moved, first))
    }

    /// A connection taken out of hyper between two requests, and the bytes
    /// read from it that hyper had not parsed.
    struct Parked {
        stream: std::net::TcpStream,
        pending: Vec<u8>,
    }

    async fn serve(
        std_listener: std::net::TcpListener,
        moved: Vec<(std::net::TcpStream, Vec<u8>)>,
        first: bool,
    ) -> io::Result<()> {
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener.try_clone()?)?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut orders = watch::channel(Order::Serve);
        let mut connections = JoinSet::new();
        for (stream, pending) in moved {
            stream.set_nonblocking(true)?;
            let stream = TcpStream::from_std(stream)?;
            connections.spawn(connection(stream, pending, orders.1.clone()));
        }
        // Ready only now that SIGHUP restarts rather than kills.
        if first {
            println!("listening on {}", std_listener.local_addr()?);
        }
        notify::ready()?;

        let mut parked = Vec::new();
        loop {
            let handing = handing_over(&orders.0);
            tokio::select! {
                accepted = listener.accept(), if !handing => {
                    let (stream, _) = accepted?;
                    connections.spawn(connection(stream, Vec::new(), orders.1.clone()));
                }
                _ = hangup.recv(), if !handing => {
                    // New connections wait in the listener's queue for
                    // the next generation from now on.
                    orders.0.send_replace(Order::HandOver);
                }
                Some(ended) = connections.join_next() => {
                    if let Ok(Some(one)) = ended {
                        parked.push(one);
                    }
                }
                _ = terminate.recv() => {
                    orders.0.send_replace(Order::Stop);
                    break;
                }
            }
            if handing_over(&orders.0) && connections.is_empty() {
                match restart(&std_listener, &mut parked).await {
                    Ok(pid) => {
                        eprintln!("restart: pid {pid} serves now");
                        return Ok(());
                    }
                    Err(e) => {
                        eprintln!("restart: still serving, the restart failed: {e}");
                        orders = watch::channel(Order::Serve);
                        for one in parked.drain(..) {
                            let stream = TcpStream::from_std(one.stream)?;
                            connections.spawn(connection(stream, one.pending, orders.1.clone()));
                        }
                    }
                }
            }
        }
        // Stop accepting; hyper closes each connection once its answer in
        // hand is sent.
        drop((listener, std_listener));
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    fn handing_over(orders: &watch::Sender<Order>) -> bool {
        *orders.borrow() == Order::HandOver
    }

    /// Starts the next generation with the listener and the connections
    /// parked, and waits, without blocking the runtime, until it is
    /// ready: its pid. Those beyond [`MOVED_AT_MOST`] are closed.
    async fn restart(
        listener: &std::net::TcpListener,
        parked: &mut Vec<Parked>,
    ) -> io::Result<u32> {
        parked.truncate(MOVED_AT_MOST);
        let mut next = Restart::new()?.fd("http", listener)?;
        for one in parked.iter() {
            next = next.connection(CONNECTION, &one.stream, &one.pending)?;
        }
        Ok(next.spawn_async().await?.pid())
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
