//! The channel on Windows: a TCP connection on 127.0.0.1, with
//! `io_fdpass::tokio::send_socket` and `recv_socket`.

use std::io;

use tokio::net::{TcpListener, TcpStream};

/// The server's listener, waiting for the worker.
pub type Waiting = TcpListener;

/// Binds the listener the worker connects to, and says where it is.
pub async fn listen() -> io::Result<(Waiting, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    Ok((listener, address))
}

/// Waits for the worker to connect.
pub async fn accept(waiting: Waiting) -> io::Result<TcpStream> {
    Ok(waiting.accept().await?.0)
}

/// Hands `conn` to the worker: the worker's pid comes first, and Windows
/// duplicates the socket for that process.
pub async fn hand(to_worker: &TcpStream, conn: &TcpStream) -> io::Result<()> {
    io_fdpass::tokio::send_socket(to_worker, conn).await
}

/// The worker's side: connects to the server at `address`.
pub async fn connect(address: &str) -> io::Result<TcpStream> {
    TcpStream::connect(address).await
}

/// The next connection the server hands over; `UnexpectedEof` once it
/// has closed the channel.
pub async fn take(from_server: &TcpStream) -> io::Result<std::net::TcpStream> {
    Ok(io_fdpass::tokio::recv_socket(from_server).await?.into())
}
