//! An async TCP server that hands every connection it accepts to a worker
//! process: the classic use of fd passing (pre-forked workers, privilege
//! separation, restarts without dropping connections).
//!
//! The server accepts on 127.0.0.1 and hands each accepted socket to the
//! worker, then closes its own copy; the worker answers the client itself.
//! On Unix the socket goes over a unix socket with `io_fdpass::tokio::send_fd`;
//! on Windows over a TCP connection to the worker with
//! `io_fdpass::tokio::send_socket`, the way Windows supports passing a
//! socket (`WSADuplicateSocketW`).
//!
//! ```sh
//! cargo run --features tokio --example handoff              # serve until Ctrl-C
//! cargo run --features tokio --example handoff -- --clients 20   # serve 20 clients of its own and check them
//! ```
//!
//! Talk to it with `nc 127.0.0.1 PORT` and type a line.

use std::io;
use std::process::{Command, ExitCode, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The connection between the server and its worker, on each platform.
#[cfg_attr(unix, path = "handoff/unix.rs")]
#[cfg_attr(windows, path = "handoff/windows.rs")]
mod channel;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["worker", address] => worker(address),
        [] => server(None, worker_command),
        ["--clients", n] => match n.parse() {
            Ok(n) => server(Some(n), worker_command),
            Err(_) => Err(usage()),
        },
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handoff: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "usage: handoff [--clients N]")
}

/// How the server starts its worker: this program again, as `worker`,
/// told where to reach the server.
fn worker_command(address: &str) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("worker").arg(address);
    Ok(cmd)
}

/// Accepts TCP connections and hands each one to the worker. With
/// `Some(n)`, also runs `n` clients against itself, checks every answer
/// and stops.
#[tokio::main]
async fn server(
    clients: Option<usize>,
    worker: impl FnOnce(&str) -> io::Result<Command>,
) -> io::Result<()> {
    let (waiting, address) = channel::listen().await?;
    let mut worker = worker(&address)?.stdin(Stdio::null()).spawn()?;
    let mut to_worker = channel::accept(waiting).await?;

    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    println!("server (pid {}): listening on {addr}", std::process::id());

    let mut clients = clients.map(|n| tokio::spawn(run_clients(addr, n)));
    let clients_done = async {
        match &mut clients {
            Some(handle) => handle.await?,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(clients_done);
    let mut handed = 0;
    loop {
        let conn = tokio::select! {
            conn = tcp.accept() => conn?.0,
            done = &mut clients_done => { done?; break; }
            _ = tokio::signal::ctrl_c() => break,
        };
        channel::hand(&to_worker, &conn).await?;
        handed += 1;
        // `conn` is dropped here: the worker holds the only copy now.
    }
    println!("server: handed {handed} connection(s) to the worker");
    // The worker sees the end and exits; the connection is closed only
    // then, so that nothing the worker sent last is refused with a reset.
    to_worker.shutdown().await?;
    let status = tokio::task::spawn_blocking(move || worker.wait()).await??;
    drop(to_worker);
    if !status.success() {
        return Err(io::Error::other(format!("the worker failed: {status}")));
    }
    Ok(())
}

/// Connects `n` clients at once, each sending a line and checking that the
/// worker, not the server, answered it.
async fn run_clients(addr: std::net::SocketAddr, n: usize) -> io::Result<()> {
    let server_pid = std::process::id();
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await?;
            conn.write_all(format!("hello {i}\n").as_bytes()).await?;
            let mut answer = String::new();
            conn.read_to_string(&mut answer).await?;
            let expected_end = format!("answers: hello {i}\n");
            let from_worker = answer.starts_with("worker (pid ")
                && !answer.starts_with(&format!("worker (pid {server_pid})"));
            if !from_worker || !answer.ends_with(&expected_end) {
                return Err(io::Error::other(format!(
                    "client {i}: wrong answer {answer:?}"
                )));
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!("clients: all {n} answered by the worker");
    Ok(())
}

/// Receives connections from the server and answers each client.
#[tokio::main(flavor = "current_thread")]
async fn worker(address: &str) -> io::Result<()> {
    let from_server = channel::connect(address).await?;
    let pid = std::process::id();
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let conn = match channel::take(&from_server).await {
            Ok(conn) => conn,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break, // the server is done
            Err(e) => return Err(e),
        };
        conn.set_nonblocking(true)?;
        let conn = TcpStream::from_std(conn)?;
        answering.spawn(async move {
            let mut conn = BufReader::new(conn);
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            let answer = format!("worker (pid {pid}) answers: {line}");
            conn.get_mut().write_all(answer.as_bytes()).await
        });
    }
    while let Some(answered) = answering.join_next().await {
        answered??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER_ENV: &str = "HANDOFF_TEST_WORKER";

    /// The whole example end to end: server, worker process, 50 clients.
    #[test]
    fn fifty_clients_are_answered_by_the_worker() {
        if let Ok(address) = std::env::var(WORKER_ENV) {
            return worker(&address).unwrap();
        }
        // Under the test harness the worker is this test, run again; its
        // name is its module path without the crate's name.
        let path = concat!(module_path!(), "::fifty_clients_are_answered_by_the_worker");
        let name = path.split_once("::").map_or(path, |(_, name)| name);
        server(Some(50), |address| {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args([name, "--exact"])
                .env(WORKER_ENV, address)
                .stdout(Stdio::null());
            Ok(cmd)
        })
        .unwrap();
    }
}
