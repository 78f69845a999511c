//! Passes an open file from one process to another.
//!
//! The parent writes a file, opens it, removes its name from the directory
//! and sends the open fd over a unix socket to a child process it started.
//! The child can no longer open the file by name; it reads it through the fd
//! it received.
//!
//! Run with `cargo run --example demo`.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match (args.next().as_deref(), args.next()) {
        (Some("child"), Some(socket)) => child(socket.into()),
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
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let socket_path = dir.join(format!("io-fdpass-demo-{pid}.sock"));
    let file_path = dir.join(format!("io-fdpass-demo-{pid}.txt"));
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)?;

    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&file_path)?;
    writeln!(file, "written by process {pid}, read through a passed fd")?;
    file.rewind()?;
    std::fs::remove_file(&file_path)?;
    println!(
        "parent (pid {pid}): wrote {}, kept it open as fd {} and removed its name",
        file_path.display(),
        file.as_raw_fd()
    );

    let mut child = Command::new(std::env::current_exe()?)
        .arg("child")
        .arg(&socket_path)
        .spawn()?;
    let (stream, _) = listener.accept()?;
    io_fdpass::send(&stream, &file)?;
    println!(
        "parent (pid {pid}): sent fd {} over {}",
        file.as_raw_fd(),
        socket_path.display()
    );
    drop(file);
    drop(stream);

    let status = child.wait()?;
    std::fs::remove_file(&socket_path)?;
    if !status.success() {
        return Err(io::Error::other(format!("the child failed: {status}")));
    }
    println!("parent (pid {pid}): the child read the file; done");
    Ok(())
}

fn child(socket_path: PathBuf) -> io::Result<()> {
    let pid = std::process::id();
    let stream = UnixStream::connect(&socket_path)?;
    let fd = io_fdpass::recv(&stream)?;
    let raw = fd.as_raw_fd();
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text)?;
    println!(
        "child  (pid {pid}): received fd {raw} and read: {}",
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
