//! Fds per second through io-fdpass next to a raw `libc` sendmsg/recvmsg
//! loop doing the same work, measured in the same run.
//!
//! Each workload runs a sender thread and a receiver thread over a
//! `SOCK_STREAM` socket pair; the receiver closes every fd it gets. Rounds of
//! the raw loop and of the library alternate, and each figure is the median
//! of its rounds, so that drift in the machine's speed hits both alike.
//!
//! With the `tokio` feature, the async calls run too, on a multi-thread
//! runtime with a sender task and a receiver task, each compared with the
//! blocking call it wraps.
//!
//! Run with `cargo bench --all-features --bench throughput` (`-- --quick`
//! for a short run).
//!
//! The benchmark measures unix sockets against raw `sendmsg`/`recvmsg`; on
//! Windows, where there is no such baseline, it only says so.

#[cfg(unix)]
#[path = "throughput/unix.rs"]
mod unix;

fn main() {
    #[cfg(unix)]
    unix::main();
    #[cfg(not(unix))]
    eprintln!("throughput: the benchmark compares unix-socket calls with raw sendmsg/recvmsg; there is no Windows counterpart");
}
