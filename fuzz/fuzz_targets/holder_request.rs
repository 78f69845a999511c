//! The holder's reading of a request (`RequestReader`, through `fuzzing`,
//! and `Request::parse`), fed a client's bytes in pieces with fds among
//! them: every fd that came is either handed over with a store or closed;
//! a request that is accepted names only what `check_name` accepts, and
//! its line parses back to the same request; an fd comes with a store and
//! only with one.

#![no_main]

use io_fdpass::fuzzing::holder::{Progress, RequestReader};
use io_fdpass::holder::protocol::{Request, MAX_REQUEST};
use io_fdpass::notify::check_name;
use io_fdpass_test_support::fd_count;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let before = fd_count();
    {
        let mut reader = RequestReader::new();
        // Each piece: a control byte (how many bytes follow, how many fds
        // come with them, and whether some were discarded or cut off),
        // then its bytes.
        let mut rest = input;
        let mut outcome = None;
        while let Some((&control, tail)) = rest.split_first() {
            let len = usize::from(control & 0x1f).min(tail.len());
            let fds = usize::from(control >> 5 & 3);
            let (discarded, cut_off) = (control == 0xfe, control == 0xff);
            let (bytes, tail) = tail.split_at(len);
            rest = tail;
            let opened: Vec<std::os::fd::OwnedFd> = (0..fds)
                .map(|_| std::fs::File::open("/dev/null").unwrap().into())
                .collect();
            match reader.received(bytes, opened, discarded, cut_off) {
                Progress::More => assert!(reader.room() > 0 && reader.room() <= MAX_REQUEST),
                done => {
                    outcome = Some(done);
                    break;
                }
            }
        }
        if let Some(Progress::Done(request, fd)) = outcome {
            assert_eq!(
                fd.is_some(),
                matches!(request, Request::Store { .. }),
                "{request:?}"
            );
            let names: Vec<&String> = match &request {
                Request::Store { name, .. } | Request::Drop { name } => vec![name],
                Request::Fetch { names, .. } | Request::Reserve { names } => names.iter().collect(),
                _ => Vec::new(),
            };
            for name in names {
                assert!(check_name(name).is_ok(), "{name:?}");
            }
            let line = request.line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(
                Request::parse(line.strip_suffix('\n').unwrap()).as_ref(),
                Ok(&request)
            );
        }
        // Any line at all: accepted only as what it prints back to.
        if let Ok(text) = std::str::from_utf8(input) {
            if let Ok(request) = Request::parse(text) {
                assert_eq!(request.line().strip_suffix('\n'), Some(text));
            }
        }
    }
    assert_eq!(fd_count(), before, "an fd of the request was not closed");
});
