//! Passes an open file from one process to another.
//!
//! The parent writes a file, opens it and sends it to a child process it
//! started: on Unix the open fd over a unix socket, after removing the
//! file's name so that the child cannot open it by name; on Windows the
//! HANDLE over a TCP connection on 127.0.0.1. The child reads the file
//! through what it received.
//!
//! Run with `cargo run --example demo`.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::process::{Command, ExitCode};

#[cfg(unix)]
mod transport {
    //! A unix socket at a path; fds.
    pub use io_fdpass::{recv_fd as recv, send_fd as send};
    pub use std::os::unix::net::{UnixListener as Listener, UnixStream as Stream};

    pub const WHAT: &str = "fd";

    /// The fd's number, for the messages.
    pub fn number(fd: &impl std::os::fd::AsRawFd) -> usize {
        fd.as_raw_fd() as usize
    }

    /// Listens at a fresh path, returned as the address.
    pub fn listen() -> std::io::Result<(Listener, String)> {
        let path = std::env::temp_dir().join(format!("io-fdpass-demo-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Ok((Listener::bind(&path)?, path.display().to_string()))
    }

    pub fn connect(address: &str) -> std::io::Result<Stream> {
        Stream::connect(address)
    }

    pub fn cleanup(address: &str) -> std::io::Result<()> {
        std::fs::remove_file(address)
    }

    /// Unix lets a file's name go while it is open.
    pub const REMOVE_NAME_BEFORE_SENDING: bool = true;
}

#[cfg(windows)]
mod transport {
    //! A TCP connection on 127.0.0.1; HANDLEs.
    pub use io_fdpass::{recv_handle as recv, send_handle as send};
    pub use std::net::{TcpListener as Listener, TcpStream as Stream};

    pub const WHAT: &str = "handle";

    /// The handle's value, for the messages.
    pub fn number(handle: &impl std::os::windows::io::AsRawHandle) -> usize {
        handle.as_raw_handle() as usize
    }

    /// Listens at a free port of 127.0.0.1, returned as the address.
    pub fn listen() -> std::io::Result<(Listener, String)> {
        let listener = Listener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        Ok((listener, address))
    }

    pub fn connect(address: &str) -> std::io::Result<Stream> {
        Stream::connect(address)
    }

    pub fn cleanup(_: &str) -> std::io::Result<()> {
        Ok(())
    }

    /// Windows removes an open file's name only once the last handle is
    /// closed, so the name goes at the end.
    pub const REMOVE_NAME_BEFORE_SENDING: bool = false;
}

use transport::WHAT;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match (args.next().as_deref(), args.next()) {
        (Some("child"), Some(address)) => child(&address),
        (None, None) => parent(),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: demo (the child is started by the demo itself)",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parent() -> io::Result<()> {
    let pid = std::process::id();
    let file_path = std::env::temp_dir().join(format!("io-fdpass-demo-{pid}.txt"));
    let (listener, address) = transport::listen()?;

    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&file_path)?;
    writeln!(
        file,
        "written by process {pid}, read through a passed {WHAT}"
    )?;
    file.rewind()?;
    let raw = transport::number(&file);
    if transport::REMOVE_NAME_BEFORE_SENDING {
        std::fs::remove_file(&file_path)?;
        println!(
            "parent (pid {pid}): wrote {}, kept it open as {WHAT} {raw} and removed its name",
            file_path.display()
        );
    } else {
        println!(
            "parent (pid {pid}): wrote {} and kept it open as {WHAT} {raw}",
            file_path.display()
        );
    }

    let mut child = Command::new(std::env::current_exe()?)
        .arg("child")
        .arg(&address)
        .spawn()?;
    let (stream, _) = listener.accept()?;
    transport::send(&stream, &file)?;
    println!("parent (pid {pid}): sent {WHAT} {raw} over {address}");
    drop(file);
    drop(stream);

    let status = child.wait()?;
    transport::cleanup(&address)?;
    if !transport::REMOVE_NAME_BEFORE_SENDING {
        std::fs::remove_file(&file_path)?;
    }
    if !status.success() {
        return Err(io::Error::other(format!("the child failed: {status}")));
    }
    println!("parent (pid {pid}): the child read the file; done");
    Ok(())
}

fn child(address: &str) -> io::Result<()> {
    let pid = std::process::id();
    let stream = transport::connect(address)?;
    let received = transport::recv(&stream)?;
    let raw = transport::number(&received);
    let mut text = String::new();
    File::from(received).read_to_string(&mut text)?;
    println!(
        "child  (pid {pid}): received {WHAT} {raw} and read: {}",
        text.trim_end()
    );
    if text.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the passed file was empty",
        ));
    }
    Ok(())
}
