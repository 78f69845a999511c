//! The benchmark on Unix: unix socket pairs, `SCM_RIGHTS`.

use std::hint::black_box;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use io_fdpass::MAX_BURST;

/// One way of moving `fds_per_msg` fds per message from a sender to a
/// receiver.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Blocking(Api),
    #[cfg(feature = "tokio")]
    Async(Api),
}

/// The calls that move the fds.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    Raw,
    Seed,
    Batch,
    /// The raw loop's sends, received with `recv_many`.
    BurstRecv,
    /// `send_many`, received by the raw loop.
    BurstSend,
    /// `send_many` and `recv_many`.
    Burst,
}

impl Way {
    const RAW: Way = Way::Blocking(Api::Raw);

    fn name(self) -> &'static str {
        match self {
            Way::Blocking(Api::Raw) => "raw libc sendmsg/recvmsg",
            Way::Blocking(Api::Seed) => "io_fdpass::send_fd/recv",
            Way::Blocking(Api::Batch) => "io_fdpass::send_fds/recv_fds",
            Way::Blocking(Api::BurstRecv) => "raw sendmsg, io_fdpass::recv_many",
            Way::Blocking(Api::BurstSend) => "io_fdpass::send_many, raw recvmsg",
            Way::Blocking(Api::Burst) => "io_fdpass::send_many/recv_many",
            #[cfg(feature = "tokio")]
            Way::Async(Api::Seed) => "io_fdpass::tokio::send_fd/recv",
            #[cfg(feature = "tokio")]
            Way::Async(_) => "io_fdpass::tokio::send_fds/recv_fds",
        }
    }

    /// What this way is measured against: the raw loop, or for an async
    /// call the blocking call it wraps.
    fn baseline(self) -> Way {
        match self {
            Way::Blocking(_) => Way::RAW,
            #[cfg(feature = "tokio")]
            Way::Async(api) => Way::Blocking(api),
        }
    }
}

/// Closes the fds a receive put into `slots`.
fn close_all(slots: &mut [Option<OwnedFd>]) {
    for slot in slots {
        drop(slot.take());
    }
}

/// Moves `messages` messages of `fds_per_msg` fds and returns fds/s.
fn run(way: Way, fds_per_msg: usize, messages: usize) -> f64 {
    match way {
        Way::Blocking(api) => run_blocking(api, fds_per_msg, messages),
        #[cfg(feature = "tokio")]
        Way::Async(api) => run_async(api, fds_per_msg, messages),
    }
}

/// Sender and receiver threads, blocking calls.
fn run_blocking(api: Api, fds_per_msg: usize, messages: usize) -> f64 {
    let (tx, rx) = UnixStream::pair().unwrap();
    let payload = std::fs::File::open("/dev/null").unwrap();
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            let fds = vec![payload.as_fd(); fds_per_msg.max(MAX_BURST)];
            let mut sent = 0;
            while sent < messages {
                sent += match api {
                    Api::Raw | Api::BurstRecv => {
                        raw_send(tx.as_raw_fd(), &fds[..fds_per_msg]);
                        1
                    }
                    Api::Seed => io_fdpass::send_fd(&tx, &payload).map(|()| 1).unwrap(),
                    Api::Batch => io_fdpass::send_fds(&tx, &[0], &fds[..fds_per_msg]).unwrap(),
                    Api::BurstSend | Api::Burst => {
                        let n = (messages - sent).min(MAX_BURST);
                        io_fdpass::send_many(&tx, &fds[..n]).unwrap()
                    }
                };
            }
        });
        let mut slots = [const { None }; io_fdpass::MAX_FDS];
        let fds = &mut slots[..fds_per_msg.max(MAX_BURST)];
        let mut received = 0;
        while received < messages {
            // How many messages came, and how many slots they filled.
            let (came, used) = match api {
                Api::Raw | Api::BurstSend => {
                    raw_recv(rx.as_raw_fd(), fds_per_msg);
                    (1, 0)
                }
                Api::Seed => {
                    drop(black_box(io_fdpass::recv_fd(&rx).unwrap()));
                    (1, 0)
                }
                Api::Batch => {
                    let slots = &mut fds[..fds_per_msg];
                    let got = io_fdpass::recv_fds(&rx, &mut [0], slots).unwrap();
                    assert_eq!(got.fds_received, fds_per_msg);
                    (1, got.fds_received)
                }
                Api::BurstRecv | Api::Burst => {
                    let got = io_fdpass::recv_many(&rx, &mut *fds).unwrap();
                    assert_eq!(got.rejected, 0);
                    (got.fds_received, got.fds_received)
                }
            };
            received += came;
            close_all(&mut fds[..used]);
        }
    });
    (messages * fds_per_msg) as f64 / start.elapsed().as_secs_f64()
}

/// Seconds spent sending and receiving in [`run_pending`].
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    send: f64,
    recv: f64,
}

/// Picks the seconds of one phase, or of both.
type PhaseSecs = fn(&Phases) -> f64;

/// How [`run_pending`] moves each burst.
#[derive(Clone, Copy, PartialEq)]
enum Pending {
    /// The raw loop: a `sendmsg` and a `recvmsg` per message.
    Loop,
    /// `send_many`/`recv_many`.
    Library,
    /// Bare `sendmmsg`/`recvmmsg` calls, one per burst: the most a burst
    /// call can gain over the loop on this machine.
    #[cfg(fdpass_recvmmsg)]
    Bare,
}

/// One thread, one fd per message, in bursts of [`MAX_BURST`] messages: all
/// sent, then all received, so that every receive finds a full burst
/// waiting, as a server does that many peers keep busy. Returns the time
/// each phase took in all; receiving includes closing what arrived.
fn run_pending(how: Pending, messages: usize) -> Phases {
    let (tx, rx) = UnixStream::pair().unwrap();
    let payload = std::fs::File::open("/dev/null").unwrap();
    let fds = [payload.as_fd(); MAX_BURST];
    let mut received = [const { None }; MAX_BURST];
    let mut phases = Phases::default();
    for _ in 0..messages.div_ceil(MAX_BURST) {
        let start = Instant::now();
        match how {
            Pending::Loop => {
                for fd in &fds {
                    raw_send(tx.as_raw_fd(), std::slice::from_ref(fd));
                }
            }
            Pending::Library => assert_eq!(io_fdpass::send_many(&tx, &fds).unwrap(), MAX_BURST),
            #[cfg(fdpass_recvmmsg)]
            Pending::Bare => bare_send_burst(tx.as_raw_fd(), &fds),
        }
        let sent = Instant::now();
        match how {
            Pending::Loop => {
                for _ in 0..MAX_BURST {
                    raw_recv(rx.as_raw_fd(), 1);
                }
            }
            Pending::Library => {
                let got = io_fdpass::recv_many(&rx, &mut received).unwrap();
                assert_eq!(got.fds_received, MAX_BURST);
                close_all(&mut received);
            }
            #[cfg(fdpass_recvmmsg)]
            Pending::Bare => bare_recv_burst(rx.as_raw_fd()),
        }
        phases.send += (sent - start).as_secs_f64();
        phases.recv += sent.elapsed().as_secs_f64();
    }
    phases
}

/// Runs [`run_pending`] each way in alternating rounds, and prints each
/// phase's fds/s for the library and for the bare calls against the raw
/// loop's.
fn compare_pending(rounds: usize, budget: Duration) {
    let probe = 2_048;
    let p = run_pending(Pending::Loop, probe);
    let messages = ((probe as f64 * budget.as_secs_f64() / (p.send + p.recv)) as usize).max(probe);
    let messages = messages.div_ceil(MAX_BURST) * MAX_BURST;
    let ways = [
        Pending::Loop,
        Pending::Library,
        #[cfg(fdpass_recvmmsg)]
        Pending::Bare,
    ];
    let mut runs = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (i, &how) in ways.iter().enumerate() {
            runs[i].push(run_pending(how, messages));
        }
    }
    let rate = |how: Pending, secs: PhaseSecs| {
        let i = ways.iter().position(|&w| w == how)?;
        Some(median(
            runs[i].iter().map(|p| messages as f64 / secs(p)).collect(),
        ))
    };
    println!(
        "\n1 fd per message, {MAX_BURST} messages pending at each call, one thread, \
         {messages} messages a round, median of {rounds} rounds:"
    );
    let phases: [(&str, &str, PhaseSecs); 3] = [
        ("send_many", "sendmmsg", |p| p.send),
        ("recv_many", "recvmmsg", |p| p.recv),
        ("send_many + recv_many", "both", |p| p.send + p.recv),
    ];
    // What bare burst calls reach, where the OS has them.
    #[cfg(fdpass_recvmmsg)]
    let ceiling = |secs| rate(Pending::Bare, secs);
    #[cfg(not(fdpass_recvmmsg))]
    let ceiling = |_: PhaseSecs| None::<f64>;
    for (name, bare, secs) in phases {
        let r = rate(Pending::Loop, secs).unwrap();
        let b = rate(Pending::Library, secs).unwrap();
        print!(
            "  {name:<24} {b:>10.0} fds/s  {:.3}x raw ({r:.0} fds/s)",
            b / r
        );
        if let Some(c) = ceiling(secs) {
            print!("; bare {bare} {:.3}x raw", c / r);
        }
        println!();
    }
}

/// The async counterpart of [`run`]: sender and receiver tasks on a
/// two-worker multi-thread runtime.
#[cfg(feature = "tokio")]
fn run_async(api: Api, fds_per_msg: usize, messages: usize) -> f64 {
    let batch = api == Api::Batch;
    use io_fdpass::tokio::{recv_fd, recv_fds, send_fd, send_fds};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = tokio::net::UnixStream::pair().unwrap();
        let payload = std::fs::File::open("/dev/null").unwrap();
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            let fds = vec![payload.as_fd(); fds_per_msg];
            for _ in 0..messages {
                if batch {
                    send_fds(&tx, &[0], &fds).await.unwrap();
                } else {
                    send_fd(&tx, &payload).await.unwrap();
                }
            }
        });
        let receiver = tokio::spawn(async move {
            let mut slots = [const { None }; io_fdpass::MAX_FDS];
            let fds = &mut slots[..fds_per_msg];
            for _ in 0..messages {
                if batch {
                    let got = recv_fds(&rx, &mut [0], &mut *fds).await.unwrap();
                    assert_eq!(got.fds_received, fds_per_msg);
                    close_all(fds);
                } else {
                    drop(black_box(recv_fd(&rx).await.unwrap()));
                }
            }
        });
        sender.await.unwrap();
        receiver.await.unwrap();
        (messages * fds_per_msg) as f64 / start.elapsed().as_secs_f64()
    })
}

/// The most fds the raw loop handles in one message.
const RAW_MAX: usize = 64;
const RAW_SPACE: usize = unsafe_cmsg_space(RAW_MAX);

const fn unsafe_cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * size_of::<RawFd>()) as u32) as usize }
}

/// A buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; RAW_SPACE]);

/// One `sendmsg` of the byte 0 with `fds` as `SCM_RIGHTS`, as a C program
/// would write it.
fn raw_send(socket: RawFd, fds: &[BorrowedFd<'_>]) {
    let mut byte = 0u8;
    let mut control = Control([0; RAW_SPACE]);
    // SAFETY: every pointer in the msghdr points into locals that outlive
    // the call, with the lengths given; the cmsg header and data are written
    // inside `control`, which CMSG_SPACE sized for `fds`.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: ptr::addr_of_mut!(byte).cast(),
            iov_len: 1,
        };
        let data_len = size_of_val(fds) as u32;
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(data_len) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
        ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fds.len() * 4,
        );
        let sent = libc::sendmsg(socket, &raw const msg, libc::MSG_NOSIGNAL);
        assert_eq!(sent, 1, "{}", io::Error::last_os_error());
    }
}

/// The raw loop's receive flags: close-on-exec fds, as the library gives.
#[cfg(fdpass_cmsg_cloexec)]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC;
#[cfg(not(fdpass_cmsg_cloexec))]
const RECV_FLAGS: libc::c_int = 0;

/// One `recvmsg` of one byte with room for `fds` fds, closing each one.
fn raw_recv(socket: RawFd, fds: usize) {
    let mut byte = 0xffu8;
    let mut control = Control([0; RAW_SPACE]);
    // SAFETY: as in `raw_send`; the kernel writes at most msg_controllen
    // bytes of control data, and each fd read from it is owned by this
    // process from then on, so wrapping it in OwnedFd to close it is sound.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: ptr::addr_of_mut!(byte).cast(),
            iov_len: 1,
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = unsafe_cmsg_space(fds) as _;
        let n = libc::recvmsg(socket, &raw mut msg, RECV_FLAGS);
        assert_eq!(n, 1, "{}", io::Error::last_os_error());
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        assert!(!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS);
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
        assert_eq!(count, fds);
        for i in 0..count {
            let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
            // Where close-on-exec cannot be asked for atomically, the library
            // sets it afterwards, and so does this loop.
            #[cfg(not(fdpass_cmsg_cloexec))]
            assert_eq!(
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC),
                0
            );
            drop(fd);
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `ways` in alternating rounds and prints each against its baseline,
/// which must come earlier in `ways`.
fn compare(fds_per_msg: usize, ways: &[Way], rounds: usize, budget: Duration) {
    // Size the message count so one round takes about `budget`.
    let probe = 2_000;
    let rate = run(Way::RAW, fds_per_msg, probe) / fds_per_msg as f64;
    let messages = ((rate * budget.as_secs_f64()) as usize).max(probe);

    let mut results = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (i, &way) in ways.iter().enumerate() {
            results[i].push(run(way, fds_per_msg, messages));
        }
    }
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    println!("\n{fds_per_msg} fd(s) per message, {messages} messages a round, median of {rounds} rounds:");
    for (way, fds_s) in ways.iter().zip(&medians) {
        let base = ways.iter().position(|&w| w == way.baseline()).unwrap();
        let base_name = if way.baseline() == Way::RAW {
            "raw"
        } else {
            "blocking"
        };
        println!(
            "  {:<48} {:>10.0} fds/s   {:.3}x {base_name}",
            way.name(),
            fds_s,
            fds_s / medians[base]
        );
    }
}

pub fn main() {
    // `cargo bench` passes `--bench`; `--quick` makes a short run.
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, budget) = if quick {
        (3, Duration::from_millis(100))
    } else {
        (9, Duration::from_millis(400))
    };
    println!("io-fdpass throughput: sender and receiver threads over a socketpair");
    let one = [
        Way::RAW,
        Way::Blocking(Api::Seed),
        Way::Blocking(Api::Batch),
    ];
    let many = [Way::RAW, Way::Blocking(Api::Batch)];
    #[cfg(feature = "tokio")]
    let (one, many) = (
        [&one[..], &[Way::Async(Api::Seed), Way::Async(Api::Batch)]].concat(),
        [&many[..], &[Way::Async(Api::Batch)]].concat(),
    );
    compare(1, &one, rounds, budget);
    let bursts = [
        Way::RAW,
        Way::Blocking(Api::BurstRecv),
        Way::Blocking(Api::BurstSend),
        Way::Blocking(Api::Burst),
    ];
    compare(1, &bursts, rounds, budget);
    compare_pending(rounds, budget);
    compare(RAW_MAX, &many, rounds, budget);
}

/// [`MAX_BURST`] one-fd messages in one bare `sendmmsg`.
#[cfg(fdpass_recvmmsg)]
fn bare_send_burst(socket: RawFd, fds: &[BorrowedFd<'_>; MAX_BURST]) {
    let mut byte = 0u8;
    let mut controls = [const { Control([0; RAW_SPACE]) }; MAX_BURST];
    // SAFETY: as in `raw_send`, for each of the MAX_BURST headers, each with its
    // own control buffer; every header points at the same one-byte payload,
    // which the kernel only reads.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: ptr::addr_of_mut!(byte).cast(),
            iov_len: 1,
        };
        let mut msgs: [libc::mmsghdr; MAX_BURST] = zeroed();
        for ((msg, control), fd) in msgs.iter_mut().zip(&mut controls).zip(fds) {
            let hdr = &mut msg.msg_hdr;
            hdr.msg_iov = &raw mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = unsafe_cmsg_space(1) as _;
            let cmsg = libc::CMSG_FIRSTHDR(hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<RawFd>()
                .write_unaligned(fd.as_raw_fd());
        }
        let sent = libc::sendmmsg(
            socket,
            msgs.as_mut_ptr(),
            MAX_BURST as _,
            libc::MSG_NOSIGNAL,
        );
        assert_eq!(
            sent as isize,
            MAX_BURST as isize,
            "{}",
            io::Error::last_os_error()
        );
    }
}

/// [`MAX_BURST`] pending one-fd messages in one bare `recvmmsg`, closing each fd.
#[cfg(fdpass_recvmmsg)]
fn bare_recv_burst(socket: RawFd) {
    let mut bytes = [0xffu8; MAX_BURST];
    let mut controls = [const { Control([0; RAW_SPACE]) }; MAX_BURST];
    // SAFETY: as in `raw_recv`, for each of the MAX_BURST headers, each with its
    // own byte and control buffer.
    unsafe {
        let mut iovs: [libc::iovec; MAX_BURST] = zeroed();
        let mut msgs: [libc::mmsghdr; MAX_BURST] = zeroed();
        for (((msg, iov), byte), control) in msgs
            .iter_mut()
            .zip(&mut iovs)
            .zip(&mut bytes)
            .zip(&mut controls)
        {
            iov.iov_base = ptr::from_mut(byte).cast();
            iov.iov_len = 1;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = unsafe_cmsg_space(1) as _;
        }
        let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
        let n = libc::recvmmsg(
            socket,
            msgs.as_mut_ptr(),
            MAX_BURST as _,
            flags,
            ptr::null_mut(),
        );
        assert_eq!(
            n as isize,
            MAX_BURST as isize,
            "{}",
            io::Error::last_os_error()
        );
        for msg in &msgs {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg.msg_hdr);
            assert!(!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS);
            drop(OwnedFd::from_raw_fd(
                libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned(),
            ));
        }
    }
}
