//! The holder, timed as a shell user meets it: whole processes.
//!
//! 1. One fd stored, fetched (running `true` with it) and dropped, round
//!    after round, with `fdpass hold` and its client commands, and with
//!    s6's fd holder (`s6-fdholderd` with `s6-fdholder-store`,
//!    `s6-fdholder-retrieve` and `s6-fdholder-delete`), all taking turns
//!    so that all meet the same machine; and a bare `true` started the
//!    same way, the floor under both. Almost all of it is starting
//!    processes, so this is where how fdpass is built and linked shows.
//! 2. `fdpass list` with no other client, and with 1,000 silent clients
//!    connected (`--client-timeout 60s`, so that they stay).
//!
//! `cargo bench -p fdpass --bench holder` (`-- --quick` for a few rounds).
//! The build timed is this package's, as `cargo install` makes it, or the
//! one `FDPASS_BENCH_BIN=PATH` names; `FDPASS_BENCH_ALSO=LABEL=PATH,…`
//! times other builds of fdpass (other flags, say) in the same rounds,
//! each with a holder of its own, so that their ratios to s6 compare. It
//! prints figures and asserts nothing.

#[cfg(unix)]
#[path = "holder/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("holder: the benchmark runs on Unix, beside s6's fd holder");
}
