//! Fds per second through io-fdpass next to a raw `libc` sendmsg/recvmsg
//! loop doing the same work, measured in the same run.
//!
//! Each workload runs a sender thread and a receiver thread over a
//! `SOCK_STREAM` socket pair; the receiver closes every fd it gets. Rounds of
//! the raw loop and of the library alternate, and each figure is the median
//! of its rounds, so that drift in the machine's speed hits both alike.
//!
//! One workload differs: a single thread sends 64 one-fd messages and then
//! receives them, so that every call finds a full burst waiting; it times
//! `send_many` and `recv_many` against the raw loop, and bare
//! `sendmmsg`/`recvmmsg` calls too where the OS has them, which shows how
//! much a burst call can gain on the machine at hand.
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
