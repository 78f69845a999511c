//! The channel on Unix: a unix socket in the temp directory, with
//! `io_fdpass::tokio::send_fd` and `recv`.

use std::io;
use std::path::PathBuf;

use tokio::net::{TcpStream, UnixListener, UnixStream};

/// The server's socket, waiting for the worker; removed when dropped.
pub struct Waiting {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket the worker connects to, and says where it is.
#[allow(
    clippy::unused_async,
    reason = "the same signature as on Windows, where listening awaits"
)]
pub async fn listen() -> io::Result<(Waiting, String)> {
    let path = std::env::temp_dir().join(format!("handoff-{}.sock", std::process::id()));
    let address = path
        .to_str()
        .ok_or_else(|| io::Error::other("the temp directory's path is not UTF-8"))?
        .to_owned();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok((Waiting { listener, path }, address))
}

/// Waits for the worker to connect.
pub async fn accept(waiting: Waiting) -> io::Result<UnixStream> {
    Ok(waiting.listener.accept().await?.0)
}

/// Hands `conn` to the worker.
pub async fn hand(to_worker: &UnixStream, conn: &TcpStream) -> io::Result<()> {
    io_fdpass::tokio::send_fd(to_worker, conn).await
}

/// The worker's side: connects to the server at `address`.
pub async fn connect(address: &str) -> io::Result<UnixStream> {
    UnixStream::connect(address).await
}

/// The next connection the server hands over; `UnexpectedEof` once it
/// has closed the channel.
pub async fn take(from_server: &UnixStream) -> io::Result<std::net::TcpStream> {
    Ok(io_fdpass::tokio::recv_fd(from_server).await?.into())
}
