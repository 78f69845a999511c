//! A TCP server whose clients stay connected through its restarts: on
//! SIGHUP the running generation hands the next one its listener, every
//! established connection with the bytes it had read and not handled, and
//! each connection's state (a counter), then exits. No client sees a close
//! or a reset, and the counters go on.
//!
//! ```sh
//! cargo run --features tokio --example keep_connections -- 127.0.0.1:8080 &
//! nc 127.0.0.1 8080     # each line sent comes back as "N: LINE (pid P)"
//! kill -HUP %1          # N goes on; P changes
//! ```
//!
//! Each line a client sends counts one; the answer gives the count of that
//! connection, the line, and the pid that served it. SIGTERM stops the
//! server.
//!
//! A restart moves at most about 250 fds (`io_fdpass::MAX_FDS`, less the
//! listener and the state, and one more for each connection that had read
//! bytes not yet handled); past that, the restart fails and this
//! generation serves on.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keep_connections: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("keep_connections: this example passes fds by the Unix socket-activation convention");
}

#[cfg(unix)]
mod unix {
    use std::io;

    use io_fdpass::activation::ListenFds;
    use io_fdpass::restart::{self, Restart};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::watch;
    use tokio::task::JoinSet;

    /// The name each connection goes to the next generation under.
    const CLIENT: &str = "client";

    /// A connection, between two lines: the stream, what it has read and
    /// not handled, and how many lines it has answered.
    struct Client {
        stream: TcpStream,
        pending: Vec<u8>,
        count: u64,
    }

    pub fn main() -> io::Result<()> {
        // Before any thread starts: the adoption marks fds close-on-exec.
        let mut inherited = ListenFds::take()?;
        let (listener, first) = match inherited.take_only_tcp_listener()? {
            Some(listener) => (listener, false),
            None => {
                let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
                (std::net::TcpListener::bind(addr)?, true)
            }
        };
        let counts = counts(restart::take_state(&mut inherited)?)?;
        let mut streams = Vec::new();
        for i in 0..inherited.len() {
            if inherited.name(i) == Some(CLIENT) {
                streams.push(restart::take_tcp_connection(&mut inherited, i)?);
            }
        }
        if streams.len() != counts.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} connections for {} counts", streams.len(), counts.len()),
            ));
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                let mut clients = Vec::new();
                for ((stream, pending), count) in streams.into_iter().zip(counts) {
                    stream.set_nonblocking(true)?;
                    let stream = TcpStream::from_std(stream)?;
                    clients.push(Client {
                        stream,
                        pending,
                        count,
                    });
                }
                serve(listener, clients, first).await
            })
    }

    /// The counts of the connections handed over, one a line, in their
    /// order; none for the first generation.
    fn counts(state: Option<Vec<u8>>) -> io::Result<Vec<u64>> {
        let Some(state) = state else {
            return Ok(Vec::new());
        };
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "a state that is not counts");
        String::from_utf8(state)
            .map_err(|_| bad())?
            .lines()
            .map(|line| line.parse().map_err(|_| bad()))
            .collect()
    }

    async fn serve(
        std_listener: std::net::TcpListener,
        clients: Vec<Client>,
        first: bool,
    ) -> io::Result<()> {
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        if first {
            println!("listening on {}", listener.local_addr()?);
        }
        // Ready only now that SIGHUP restarts rather than kills, and each
        // connection handed over is served again.
        let (hand_over, handing_over) = watch::channel(false);
        let mut connections = JoinSet::new();
        for client in clients {
            connections.spawn(converse(client, handing_over.clone()));
        }
        io_fdpass::notify::ready()?;

        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let client = Client { stream, pending: Vec::new(), count: 0 };
                    connections.spawn(converse(client, handing_over.clone()));
                }
                _ = hangup.recv() => {
                    // No accepting meanwhile: a connection queued now goes
                    // to whichever generation serves next.
                    hand_over.send_replace(true);
                    let clients = gather(&mut connections).await;
                    hand_over.send_replace(false);
                    match restart(&listener, &clients).await {
                        Ok(pid) => {
                            let pending = clients.iter().filter(|c| !c.pending.is_empty());
                            eprintln!(
                                "keep_connections: pid {pid} serves now, with {} connections \
                                 ({} with bytes read and not handled)",
                                clients.len(),
                                pending.count()
                            );
                            // Closing this generation's copies closes no
                            // connection: the next generation holds them.
                            return Ok(());
                        }
                        Err(e) => {
                            eprintln!("keep_connections: still serving, the restart failed: {e}");
                            for client in clients {
                                connections.spawn(converse(client, handing_over.clone()));
                            }
                        }
                    }
                }
                _ = terminate.recv() => return Ok(()),
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    /// Every connection still open, each stopped between two lines.
    async fn gather(connections: &mut JoinSet<Option<Client>>) -> Vec<Client> {
        let mut clients = Vec::new();
        while let Some(done) = connections.join_next().await {
            if let Ok(Some(client)) = done {
                clients.push(client);
            }
        }
        clients
    }

    /// Starts the next generation with the listener, the connections and
    /// their counts; its pid once it is ready.
    async fn restart(listener: &TcpListener, clients: &[Client]) -> io::Result<u32> {
        let mut next = Restart::new()?.fd("tcp", listener)?;
        let mut counts = String::new();
        for client in clients {
            next = next.connection(CLIENT, &client.stream, &client.pending)?;
            counts.push_str(&format!("{}\n", client.count));
        }
        let next = next.state(counts.as_bytes())?.spawn_async().await?;
        Ok(next.pid())
    }

    /// Answers each line of `client` with its count, until the client
    /// closes (`None`) or the connection is to be handed over (the client,
    /// stopped between two lines).
    async fn converse(mut client: Client, mut hand_over: watch::Receiver<bool>) -> Option<Client> {
        let mut buf = [0u8; 4096];
        loop {
            // One line at a time, so that a hand-over comes between two.
            if *hand_over.borrow_and_update() {
                return Some(client);
            }
            if let Some(end) = client.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = client.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                client.count += 1;
                let pid = std::process::id();
                let answer = format!("{}: {} (pid {pid})\n", client.count, line.trim_end());
                client.stream.write_all(answer.as_bytes()).await.ok()?;
                continue;
            }
            tokio::select! {
                // Reading is cancel safe: a read cut short has read nothing.
                read = client.stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => client.pending.extend_from_slice(&buf[..n]),
                },
                _ = hand_over.changed() => {}
            }
        }
    }
}
