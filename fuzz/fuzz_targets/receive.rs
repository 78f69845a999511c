//! The receive calls over real sockets: the input chooses a transfer of
//! the tests' fault mix (`tests/util/faults.rs`) — the socket type and its
//! options, the messages a raw peer sends, a hang-up, a lowered fd limit,
//! the call and its storage — and the call must give exactly what the docs
//! promise, with no fd left open once it is over.

#![no_main]

#[path = "../../tests/util/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::os::fd::AsFd;
use std::sync::Mutex;

use faults::{Bytes, Fillers, Markers, Plan};
use io_fdpass_test_support::fd_count;
use libfuzzer_sys::fuzz_target;

/// The files the peer sends, and the fds of full slots: made once.
static FILES: Mutex<Option<(Markers, Fillers)>> = Mutex::new(None);

fuzz_target!(|input: &[u8]| {
    let mut files = FILES.lock().unwrap();
    let (markers, fillers) = files.get_or_insert_with(|| {
        faults::raise_fd_limit();
        let markers = Markers::new();
        let fillers = Fillers::new(&markers);
        (markers, fillers)
    });
    let before = fd_count();
    let mut plan = Plan::choose(&mut Bytes(input));
    {
        let (peer, socket) = faults::pair(plan.ty);
        rustix::io::ioctl_fionbio(&socket, true).unwrap();
        faults::set_options(&mut plan, socket.as_fd());
        let expected = faults::expect(&plan);
        let peer = faults::send(&plan, peer, markers);
        let saved = plan.free_slots.map(faults::lower_fd_limit);
        let got = faults::receive(&plan, socket.as_fd(), markers, fillers);
        if let Some(saved) = saved {
            rustix::process::setrlimit(rustix::process::Resource::Nofile, saved).unwrap();
        }
        assert_eq!(got, expected.outcome, "{plan:?}");
        drop((peer, socket));
    }
    assert_eq!(fd_count(), before, "fds left open after {plan:?}");
});
