//! A TCP server that restarts itself without refusing or dropping a
//! connection: the running generation starts the next with its listener
//! (`io_fdpass::restart`), and once the next says it is ready, stops
//! accepting, finishes the requests in hand and exits.
//!
//! On Unix it restarts on SIGHUP, and SIGTERM stops it:
//!
//! ```sh
//! cargo run --features tokio --example restart -- 127.0.0.1:8080 &
//! curl http://127.0.0.1:8080/     # "served by pid N"
//! kill -HUP %1                    # a new pid serves from now on
//! ```
//!
//! Windows has no SIGHUP: there it restarts when the line `restart`
//! arrives on its standard input, which every generation shares, and
//! stops when the line `stop` arrives or the input ends. Send the next
//! `restart` once the old generation has exited: until then it may read
//! the line itself.
//!
//! Each answer names the pid that served it. `GET /hold` is a long
//! request, as a download or a stream would be: its answer begins at once
//! and ends when the client shuts down its side, and the generation that
//! took it finishes it before it exits, however many restarts come
//! meanwhile.
//!
//! Under systemd, `examples/systemd/restart.service` runs it, and
//! `restart-activated.socket` with `restart-activated.service` runs it on a
//! socket systemd opens; `systemctl reload` restarts it, and systemd
//! follows each generation as the service's main process.

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

use std::io;

use io_fdpass::activation::ListenFds;
use io_fdpass::notify;
use io_fdpass::restart::Restart;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

fn run() -> io::Result<()> {
    // Before any thread starts: the adoption marks the fds close-on-exec
    // (on Windows, it removes the handover's variables).
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

/// What the outside asks of the server.
enum Ask {
    Restart,
    Stop,
}

async fn serve(std_listener: std::net::TcpListener, first: bool) -> io::Result<()> {
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let mut asks = asks::Asks::new()?;
    // Ready only now that a restart request restarts rather than kills.
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
                not_inherited(&connection)?;
                requests.spawn(answer(connection));
            }
            ask = asks.next(), if restarting.is_none() => match ask {
                Ask::Restart => {
                    // The restart owns a copy of the listener, and its
                    // future waits without blocking: the runtime goes on
                    // serving meanwhile.
                    let next = Restart::new()?.fd("http", &listener)?.spawn_async();
                    restarting = Some(Box::pin(next));
                }
                Ask::Stop => break,
            },
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
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    // Stop accepting; the next generation takes what is queued. Finish
    // the requests in hand, then go.
    drop(listener);
    while requests.join_next().await.is_some() {}
    Ok(())
}

/// Keeps a connection out of the next generation. On Unix, tokio's
/// sockets are close-on-exec already. Under Wine (8) a socket that
/// `accept` returns is inheritable, and a connection the next generation
/// inherits stays open there after this one has answered and closed it:
/// its client would wait for the end of the answer.
#[cfg(unix)]
fn not_inherited(_: &TcpStream) -> io::Result<()> {
    Ok(())
}

#[cfg(windows)]
fn not_inherited(connection: &TcpStream) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Foundation::{SetHandleInformation, HANDLE_FLAG_INHERIT};
    // SAFETY: a live socket handle of this process; flags only.
    let ok =
        unsafe { SetHandleInformation(connection.as_raw_socket() as _, HANDLE_FLAG_INHERIT, 0) };
    match ok {
        0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
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

/// SIGHUP and SIGTERM.
#[cfg(unix)]
mod asks {
    use std::io;

    use tokio::signal::unix::{signal, Signal, SignalKind};

    pub struct Asks {
        hangup: Signal,
        terminate: Signal,
    }

    impl Asks {
        pub fn new() -> io::Result<Asks> {
            Ok(Asks {
                hangup: signal(SignalKind::hangup())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }

        pub async fn next(&mut self) -> super::Ask {
            tokio::select! {
                _ = self.hangup.recv() => super::Ask::Restart,
                _ = self.terminate.recv() => super::Ask::Stop,
            }
        }
    }
}

/// The lines `restart` and `stop` on the standard input, read by a thread
/// of their own; its end is `stop`.
#[cfg(windows)]
mod asks {
    use std::io::{self, BufRead};

    use tokio::sync::mpsc;

    pub struct Asks(mpsc::UnboundedReceiver<super::Ask>);

    impl Asks {
        pub fn new() -> io::Result<Asks> {
            let (send, receive) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in io::stdin().lock().lines() {
                    let ask = match line.as_deref().map(str::trim) {
                        Ok("restart") => super::Ask::Restart,
                        Ok("stop") | Err(_) => break,
                        Ok(other) => {
                            eprintln!("restart: {other:?} is neither restart nor stop");
                            continue;
                        }
                    };
                    if send.send(ask).is_err() {
                        return;
                    }
                }
                let _ = send.send(super::Ask::Stop);
            });
            Ok(Asks(receive))
        }

        pub async fn next(&mut self) -> super::Ask {
            self.0.recv().await.unwrap_or(super::Ask::Stop)
        }
    }
}
