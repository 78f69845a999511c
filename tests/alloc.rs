//! A send or receive allocates nothing on the heap: counted by a global
//! allocator, on this thread only.

#![cfg(unix)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; counting
// touches only a thread-local integer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is forwarded as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is forwarded as it is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is forwarded as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn send_and_recv_allocate_nothing() {
    let (a, b) = UnixStream::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let fds = vec![file.as_fd(); io_fdpass::MAX_FDS];
    let mut received = [const { None }; io_fdpass::MAX_FDS];
    let mut data = [0; 16];

    let count = allocations_in(|| {
        for _ in 0..100 {
            io_fdpass::send_fd(&a, &file).unwrap();
            drop(io_fdpass::recv_fd(&b).unwrap());

            io_fdpass::send_fds(&a, b"batch", &fds).unwrap();
            let got = io_fdpass::recv_fds(&b, &mut data, &mut received).unwrap();
            assert_eq!(got.fds_received, io_fdpass::MAX_FDS);
            for fd in &mut received {
                drop(fd.take());
            }
        }
    });
    assert_eq!(count, 0, "heap allocations in 100 rounds of every call");
}
