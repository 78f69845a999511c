//! The client's reading of a holder's answer: `holder::Client` against a
//! holder that sends whatever the input says, greeting, answer and fds
//! included, over a real socket; and `parse_answer` and `Entry::parse` on
//! the text alone. Every fd that came is closed unless the call succeeds
//! and returns it; an error has a kind a caller can act on; an entry that
//! is accepted prints back to what parses as the same entry.

#![no_main]

use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use io_fdpass::fuzzing::holder::parse_answer;
use io_fdpass::holder::protocol::Entry;
use io_fdpass::holder::Client;
use io_fdpass_test_support::fd_count;
use libfuzzer_sys::fuzz_target;

/// The fake holder's socket, made once per process.
fn socket() -> &'static (PathBuf, UnixListener) {
    static SOCKET: OnceLock<(PathBuf, UnixListener)> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("fdpass-fuzz-answer-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        (path, listener)
    })
}

fuzz_target!(|input: &[u8]| {
    let (control, answer) = input.split_first().unwrap_or((&0, &[]));
    let want = usize::from(control & 3);
    let attach = usize::from(control >> 2 & 7);
    let (path, listener) = socket();
    let before = fd_count();
    {
        let client = Client::new(path)
            .timeout(Duration::from_secs(5))
            .max_answer(4096);
        let holder = std::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                let (stream, _) = listener.accept().unwrap();
                let mut request = [0; 4096];
                let _ = (&stream).write_all(b"fdpass-hold 1\n");
                let _ = std::io::Read::read(&mut &stream, &mut request);
                let null = std::fs::File::open("/dev/null").unwrap();
                let fds = vec![null.as_fd(); attach];
                if !answer.is_empty() {
                    let sent = io_fdpass::send_fds(&stream, answer, &fds).unwrap_or(0);
                    let _ = (&stream).write_all(&answer[sent..]);
                }
            });
            let names = ["a", "b", "c"];
            let result = match want {
                0 => client.entries().map(|e| e.len()),
                n => client.fetch_many(&names[..n]).map(|fds| {
                    assert_eq!(fds.len(), n);
                    fds.len()
                }),
            };
            holder.join().unwrap();
            result
        });
        if let Err(e) = holder {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidData
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::NotFound
                        | ErrorKind::PermissionDenied
                        | ErrorKind::InvalidInput
                        | ErrorKind::QuotaExceeded
                        | ErrorKind::Other
                        | ErrorKind::ConnectionReset
                        | ErrorKind::BrokenPipe
                ),
                "{e:?}"
            );
        }
    }
    assert_eq!(fd_count(), before, "an fd the holder sent was not closed");

    // The text alone.
    let text = String::from_utf8_lossy(answer);
    if let Ok(body) = parse_answer(&text, "ok\n") {
        for line in body.lines() {
            if let Ok(entry) = Entry::parse(line) {
                let printed = entry.line();
                assert_eq!(
                    Entry::parse(printed.strip_suffix('\n').unwrap()).unwrap(),
                    entry
                );
            }
        }
    }
});
