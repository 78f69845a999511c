//! An async TCP server that hands every connection it accepts to a worker
//! process: the classic use of fd passing (pre-forked workers, privilege
//! separation, restarts without dropping connections).
//!
//! The server accepts on 127.0.0.1, sends each accepted socket over a unix
//! socket to the worker with `io_fdpass::tokio::send`, and closes its own
//! copy. The worker receives the socket and answers the client itself.
//!
//! ```sh
//! cargo run --features tokio --example handoff              # serve until Ctrl-C
//! cargo run --features tokio --example handoff -- --clients 20   # serve 20 clients of its own and check them
//! ```
//!
//! Talk to it with `nc 127.0.0.1 PORT` and type a line.
//!
//! On Windows the same hand-off is `io_fdpass::tokio::send_socket` over a
//! TCP connection to the worker; this example is written for Unix.

#[cfg(unix)]
#[path = "handoff/unix.rs"]
mod unix;

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    return unix::main();
    #[cfg(not(unix))]
    {
        eprintln!("handoff: this example hands connections over unix sockets; it runs on Unix");
        std::process::ExitCode::FAILURE
    }
}
