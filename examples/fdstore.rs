//! A TCP server that survives its own crash with systemd's fd store: it
//! keeps its listening socket there, so that after `kill -9` systemd starts
//! it again on the same socket (connections wait in its queue meanwhile),
//! and a pipe beside it, both ends under one name (systemd drops a read end
//! alone once the pipe hangs up). A connection that sends `FORGET` removes
//! the pipe from the store (`FDSTOREREMOVE=1`).
//!
//! Each answer says what the fd store gave this process at its start, by
//! name, and which pid served it. `examples/systemd/fdstore.service` runs
//! it; outside systemd it serves all the same, and stores nothing.
//!
//! ```sh
//! cargo run --example fdstore -- 127.0.0.1:8090
//! ```

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fdstore: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("fdstore: systemd's fd store is a Unix service manager's");
}

#[cfg(unix)]
mod unix {
    use std::io::{self, BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use io_fdpass::activation::ListenFds;
    use io_fdpass::notify;

    pub fn main() -> io::Result<()> {
        let mut given = ListenFds::take()?;
        let names: Vec<&str> = (0..given.len()).filter_map(|i| given.name(i)).collect();
        let gave = if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(" ")
        };
        let listener = match given.index_of("http") {
            Some(i) => given.take_tcp_listener(i)?,
            None => {
                let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8090".into());
                let listener = TcpListener::bind(addr)?;
                notify::store_fds("http", &[listener.as_fd()])?;
                listener
            }
        };
        if given.index_of("scratch").is_none() {
            let (read, write) = io::pipe()?;
            notify::store_fds("scratch", &[read.as_fd(), write.as_fd()])?;
        }
        // What is left of `given` (the pipe, if it came) is closed here:
        // the fd store keeps its own copies.
        drop(given);
        notify::ready()?;
        for connection in listener.incoming() {
            // One client's failure is not the server's.
            let _ = answer(connection?, &gave);
        }
        Ok(())
    }

    /// `FORGET` removes the pipe from the fd store; anything else (an HTTP
    /// request) is answered with what the store gave and this pid.
    fn answer(connection: TcpStream, gave: &str) -> io::Result<()> {
        let mut reader = BufReader::new(connection);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let body = if line.trim() == "FORGET" {
            notify::remove_fds("scratch")?;
            "forgot scratch\n".to_owned()
        } else {
            while reader.read_line(&mut line)? > 2 {
                line.clear();
            }
            format!(
                "the fd store gave: {gave}\nserved by pid {}\n",
                std::process::id()
            )
        };
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(reply.as_bytes())
    }
}
