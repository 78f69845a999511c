//! A TCP server that restarts itself on SIGHUP without refusing or dropping
//! a connection: the running generation starts the next with its listener
//! (`io_fdpass::restart`), and once the next says it is ready, stops
//! accepting, finishes the requests in hand and exits.
//!
//! ```sh
//! cargo run --features tokio --example restart -- 127.0.0.1:8080 &
//! curl http://127.0.0.1:8080/     # "served by pid N"
//! kill -HUP %1                    # a new pid serves from now on
//! ```
//!
//! Each answer names the pid that served it. `GET /hold` is a long
//! request, as a download or a stream would be: its answer begins at once
//! and ends when the client shuts down its side, and the generation that
//! took it finishes it before it exits, however many restarts come
//! meanwhile. SIGTERM stops the server.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("restart: this example passes fds by the Unix socket-activation convention");
}

#[cfg(unix)]
mod unix {
    use std::io;

    use io_fdpass::activation::ListenFds;
    use io_fdpass::notify;
    use io_fdpass::restart::Restart;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::task::JoinSet;

    pub fn main() -> io::Result<()> {
        // Before any thread starts: the adoption marks the fds close-on-exec.
        let mut inherited = ListenFds::take()?;
        // Whatever the listener is called: `fdpass listen` names it by its
        // scheme, systemd-socket-activate and systemfd `unknown`, and the
        // previous generation `http`.
        let (listener, first) = match inherited.take_only_tcp_listener()? {
            Some(listener) => (listener, false),
            None => {
                let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
                (std::net::TcpListener::bind(addr)?, true)
            }
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve(listener, first))
    }

    async fn serve(std_listener: std::net::TcpListener, first: bool) -> io::Result<()> {
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        // Ready only now that SIGHUP restarts rather than kills.
        if first {
            println!("listening on {}", listener.local_addr()?);
        }
        notify::ready()?;

        let mut requests = JoinSet::new();
        let mut restarting = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (connection, _) = accepted?;
                    requests.spawn(answer(connection));
                }
                _ = hangup.recv(), if restarting.is_none() => {
                    // The restart owns a copy of the listener, and its
                    // future waits without blocking: the runtime goes on
                    // serving meanwhile.
                    let next = Restart::new()?.fd("http", &listener)?.spawn_async();
                    restarting = Some(Box::pin(next));
                }
                done = async { restarting.as_mut().expect("guarded").await },
                    if restarting.is_some() =>
                {
                    restarting = None;
                    match done {
                        Ok(next) => {
                            eprintln!("restart: pid {} serves now", next.pid());
                            break;
                        }
                        Err(e) => eprintln!("restart: still serving, the restart failed: {e}"),
                    }
                }
                _ = terminate.recv() => break,
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
            }
        }
        // Stop accepting; the next generation takes what is queued. Finish
        // the requests in hand, then go.
        drop(listener);
        while requests.join_next().await.is_some() {}
        Ok(())
    }

    /// Reads a request's head and answers with this process's pid.
    async fn answer(connection: TcpStream) {
        let mut connection = BufReader::new(connection);
        let mut line = String::new();
        let mut hold = false;
        while connection.read_line(&mut line).await.is_ok_and(|n| n > 2) {
            hold |= line.starts_with("GET /hold ");
            line.clear();
        }
        if hold {
            return answer_held(connection).await;
        }
        let body = format!("served by pid {}\n", std::process::id());
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = connection.get_mut().write_all(reply.as_bytes()).await;
    }

    /// A long request: its answer begins at once and ends when the client
    /// has shut down its side, however many restarts come meanwhile. A
    /// generation finishes it before it exits.
    async fn answer_held(mut connection: BufReader<TcpStream>) {
        let pid = std::process::id();
        let head = format!("HTTP/1.0 200 OK\r\n\r\nheld by pid {pid}\n");
        if connection
            .get_mut()
            .write_all(head.as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let mut discard = [0; 1024];
        while connection.read(&mut discard).await.is_ok_and(|n| n > 0) {}
        let end = format!("served by pid {pid}\n");
        let _ = connection.get_mut().write_all(end.as_bytes()).await;
    }
}
