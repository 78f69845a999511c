//! The example on Unix: the worker listens on a unix socket.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["worker", socket] => worker(socket.as_ref()),
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

/// How the server starts its worker: this program again, as `worker`.
fn worker_command(socket: &Path) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("worker").arg(socket);
    Ok(cmd)
}

/// Accepts TCP connections and hands each one to the worker. With
/// `Some(n)`, also runs `n` clients against itself, checks every answer
/// and stops.
#[tokio::main]
async fn server(
    clients: Option<usize>,
    worker: impl FnOnce(&Path) -> io::Result<Command>,
) -> io::Result<()> {
    let socket_path = std::env::temp_dir().join(format!("handoff-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let handoff = UnixListener::bind(&socket_path)?;
    let mut worker = worker(&socket_path)?.stdin(Stdio::null()).spawn()?;
    let (to_worker, _) = handoff.accept().await?;
    std::fs::remove_file(&socket_path)?;

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
        io_fdpass::tokio::send(&to_worker, &conn).await?;
        handed += 1;
        // `conn` is dropped here: the worker holds the only copy now.
    }
    println!("server: handed {handed} connection(s) to the worker");
    drop(to_worker); // the worker sees the end and exits
    let status = tokio::task::spawn_blocking(move || worker.wait()).await??;
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
async fn worker(socket_path: &Path) -> io::Result<()> {
    let from_server = UnixStream::connect(PathBuf::from(socket_path)).await?;
    let pid = std::process::id();
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let fd: OwnedFd = match io_fdpass::tokio::recv(&from_server).await {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        let conn = std::net::TcpStream::from(fd);
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
        if let Ok(socket) = std::env::var(WORKER_ENV) {
            return worker(socket.as_ref()).unwrap();
        }
        // Under the test harness the worker is this test, run again; its
        // name is its module path without the crate's name.
        let path = concat!(module_path!(), "::fifty_clients_are_answered_by_the_worker");
        let name = path.split_once("::").map_or(path, |(_, name)| name);
        server(Some(50), |socket| {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args([name, "--exact"])
                .env(WORKER_ENV, socket)
                .stdout(Stdio::null());
            Ok(cmd)
        })
        .unwrap();
    }
}
