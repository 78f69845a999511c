//! Faults a hostile peer injects, sent with raw libc calls rather than the
//! code under test, and what the library must make of each: the exact
//! result, or the exact error kind, that its docs promise for what was
//! sent. The soak (`tests/soak.rs`) and the receive fuzz target
//! (`fuzz/fuzz_targets/receive.rs`) share it: the soak chooses with a
//! seeded generator, the fuzzer with its input.
//!
//! Linux only: [`expect`] predicts what Linux's unix sockets deliver, down
//! to how much control data fits the library's buffers.
//!
//! A [`Plan`] is one transfer: the socket type and its options, the
//! messages the peer sends, whether it hangs up, a lowered fd limit, and
//! the receive call with its storage. [`send_fd`] sends it, [`expect`] says
//! what must come of it, and [`receive`] makes the call and says what did.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use io_fdpass::{recv_batch, recv_fd, recv_fds, recv_many, MAX_BURST, MAX_FDS};

/// Where choices come from: a seeded generator or a fuzzer's bytes.
pub trait Choose {
    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize;

    /// True one time in `one_in`.
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// xorshift64*: repeatable choices from a seed.
pub struct Rng(pub u64);

impl Choose for Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// A fuzzer's input as choices: a byte (two for large ranges) each, and 0
/// once it runs out, so that a short input is a plain transfer.
pub struct Bytes<'a>(pub &'a [u8]);

impl Choose for Bytes<'_> {
    fn below(&mut self, n: usize) -> usize {
        let width = if n > 256 { 2 } else { 1 };
        let mut value = 0;
        for _ in 0..width {
            let Some((&byte, rest)) = self.0.split_first() else {
                break;
            };
            value = value << 8 | usize::from(byte);
            self.0 = rest;
        }
        value % n
    }
}

/// The socket types a transfer goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Stream,
    SeqPacket,
    Datagram,
}

/// One message as the peer sends it.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub data: Vec<u8>,
    /// The fds, as indices into the [`Markers`].
    pub fds: Vec<usize>,
    /// How many `SCM_RIGHTS` control messages the fds are split into.
    pub groups: usize,
    /// Whether the peer adds `SCM_CREDENTIALS` of its own.
    pub credentials: bool,
}

/// The receive call and its storage: for each slot, whether it holds an
/// fd already.
#[derive(Clone, Debug)]
pub enum Call {
    Recv,
    RecvFds { slots: Vec<bool> },
    RecvWithFds { buffer: usize, slots: Vec<bool> },
    RecvMany { slots: Vec<bool> },
}

/// One transfer.
#[derive(Clone, Debug)]
pub struct Plan {
    pub ty: Type,
    /// `SO_PASSCRED` on the receiving socket.
    pub pass_credentials: bool,
    /// `SO_PASSPIDFD` on the receiving socket.
    pub pass_pidfd: bool,
    /// `RLIMIT_NOFILE` lowered to leave this many free fd slots while the
    /// call runs.
    pub free_slots: Option<usize>,
    pub messages: Vec<Message>,
    /// Whether the peer closes its end once it has sent.
    pub hang_up: bool,
    pub call: Call,
}

/// The faults a transfer can carry, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 2 to 253 fds in one message.
    ManyFds,
    WrongByte,
    NoFd,
    /// Several `SCM_RIGHTS` in one `sendmsg`.
    SeveralRights,
    /// `SCM_CREDENTIALS` from the peer.
    PeerCredentials,
    PassCredentials,
    PassPidfd,
    /// A datagram or record longer than the receive's buffer.
    Truncated,
    /// A record or datagram with no data, with fds or without.
    Empty,
    /// 0 to 4 free fd slots.
    FdLimit,
    HangUp,
    /// Several messages for one `recv_many`.
    Burst,
}

/// How many markers there are.
pub const MARKERS: usize = 4;

/// The most slots a call's storage has.
pub const MAX_SLOTS: usize = MAX_BURST + 8;

impl Plan {
    /// Chooses a transfer. Something always arrives (on a stream every
    /// message has data), so that a blocking receiver never waits for
    /// good.
    pub fn choose(c: &mut impl Choose) -> Plan {
        let ty = [Type::Stream, Type::SeqPacket, Type::Datagram][c.below(3)];
        let (call, count) = match c.below(5) {
            0 | 1 => (Call::Recv, 1),
            2 => (Call::RecvFds { slots: slots(c, 6) }, 1),
            3 => {
                let buffer = 1 + c.below(10);
                (
                    Call::RecvWithFds {
                        buffer,
                        slots: slots(c, 6),
                    },
                    1,
                )
            }
            _ => {
                let count = if c.chance(3) { 2 + c.below(7) } else { 1 };
                let slots = if c.chance(8) {
                    slots(c, MAX_SLOTS)
                } else {
                    slots(c, 10)
                };
                (Call::RecvMany { slots }, count)
            }
        };
        let messages = (0..count).map(|_| message(c, ty)).collect();
        let hang_up = ty != Type::Datagram && c.chance(25);
        Plan {
            ty,
            pass_credentials: c.chance(4),
            pass_pidfd: c.chance(4),
            free_slots: c.chance(40).then(|| c.below(5)),
            messages,
            hang_up,
            call,
        }
    }

    /// Whether the receiver may start its call before the peer sends: a
    /// single message, with no hang-up or fd limit that the call could
    /// otherwise race.
    pub fn receiver_may_wait(&self) -> bool {
        self.messages.len() == 1 && !self.hang_up && self.free_slots.is_none()
    }

    /// The faults this transfer carries.
    pub fn faults(&self) -> Vec<Fault> {
        let mut faults = Vec::new();
        let mut add = |fault, on: bool| {
            if on && !faults.contains(&fault) {
                faults.push(fault);
            }
        };
        let buffer = match self.call {
            Call::RecvWithFds { buffer, .. } => buffer,
            _ => 1,
        };
        for m in &self.messages {
            add(Fault::ManyFds, m.fds.len() > 1);
            add(Fault::WrongByte, m.data.first().is_some_and(|&b| b != 0));
            add(Fault::NoFd, m.fds.is_empty());
            add(Fault::SeveralRights, m.groups > 1);
            add(Fault::PeerCredentials, m.credentials);
            add(
                Fault::Truncated,
                self.ty != Type::Stream && m.data.len() > buffer,
            );
            add(Fault::Empty, m.data.is_empty());
        }
        add(Fault::PassCredentials, self.pass_credentials);
        add(Fault::PassPidfd, self.pass_pidfd);
        add(Fault::FdLimit, self.free_slots.is_some());
        add(Fault::HangUp, self.hang_up);
        add(Fault::Burst, self.messages.len() > 1);
        faults
    }

    /// How many fds the peer sends.
    pub fn fds_sent(&self) -> usize {
        self.messages.iter().map(|m| m.fds.len()).sum()
    }
}

/// `n` slots at most, some of them full.
fn slots(c: &mut impl Choose, most: usize) -> Vec<bool> {
    (0..c.below(most + 1)).map(|_| c.chance(4)).collect()
}

fn message(c: &mut impl Choose, ty: Type) -> Message {
    let mut data = vec![0];
    if c.chance(10) {
        data[0] = 1 + c.below(255) as u8;
    }
    if c.chance(10) {
        data.extend((0..=c.below(7)).map(|_| c.below(3) as u8));
    }
    // On a stream no empty message is sent: it would send nothing.
    if ty != Type::Stream && c.chance(20) {
        data.clear();
    }
    // Mostly one fd; now and then none, a few, or up to the most one
    // message carries (rarely: each costs the kernel hundreds of fds).
    let count = match c.below(100) {
        0..=9 => 0,
        10..=14 => 2 + c.below(15),
        15 => 17 + c.below(MAX_FDS - 16),
        _ => 1,
    };
    let fds: Vec<usize> = (0..count).map(|_| c.below(MARKERS)).collect();
    let groups = match count {
        0 => 0,
        1 => 1,
        n if c.chance(4) => 2 + c.below(n.min(4) - 1),
        _ => 1,
    };
    Message {
        data,
        fds,
        groups,
        credentials: c.chance(8),
    }
}

/// Distinct open files, each told apart by its device and inode: the
/// write end of a pipe (whose read end, [`Markers::reader`], reads the end
/// only once every copy is closed) and memfds.
pub struct Markers {
    pub fds: Vec<OwnedFd>,
    pub reader: OwnedFd,
    ids: Vec<(u64, u64)>,
}

impl Markers {
    pub fn new() -> Markers {
        use rustix::fs::{memfd_create, MemfdFlags};
        use rustix::pipe::{pipe_with, PipeFlags};
        let (reader, writer) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).unwrap();
        let mut fds = vec![writer];
        for _ in 1..MARKERS {
            fds.push(memfd_create("io-fdpass-marker", MemfdFlags::CLOEXEC).unwrap());
        }
        let ids = fds.iter().map(file_id).collect();
        Markers { fds, reader, ids }
    }

    /// Which marker `fd` is a copy of.
    pub fn which(&self, fd: impl AsFd) -> usize {
        let id = file_id(fd);
        self.ids
            .iter()
            .position(|&marker| marker == id)
            .unwrap_or_else(|| panic!("a received fd that no one sent: {id:?}"))
    }

    /// Closes every marker and says whether the pipe's read end then reads
    /// the end: whether no copy of its write end is open anywhere.
    pub fn close_and_see_the_end(self) -> bool {
        drop(self.fds);
        let mut byte = [0];
        matches!(rustix::io::read(&self.reader, &mut byte), Ok(0))
    }
}

impl Default for Markers {
    fn default() -> Self {
        Markers::new()
    }
}

fn file_id(fd: impl AsFd) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).unwrap();
    (stat.st_dev, stat.st_ino)
}

/// A connected pair of unix sockets of `ty`, close-on-exec: the peer's
/// end, then the receiver's.
pub fn pair(ty: Type) -> (OwnedFd, OwnedFd) {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let ty = match ty {
        Type::Stream => SocketType::STREAM,
        Type::SeqPacket => SocketType::SEQPACKET,
        Type::Datagram => SocketType::DGRAM,
    };
    socketpair(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None).unwrap()
}

/// Sets the receiving socket's options as `plan` says, and turns
/// `pass_pidfd` off in it where the kernel has no `SO_PASSPIDFD`.
pub fn set_options(plan: &mut Plan, socket: BorrowedFd<'_>) {
    rustix::net::sockopt::set_socket_passcred(socket, plan.pass_credentials).unwrap();
    if io_fdpass_test_support::set_pass_pidfd(socket, plan.pass_pidfd).is_err() {
        plan.pass_pidfd = false;
    }
}

/// `CMSG_SPACE(len)`.
fn space(len: usize) -> usize {
    // SAFETY: arithmetic on the length only.
    unsafe { libc::CMSG_SPACE(len as libc::c_uint) as usize }
}

/// `CMSG_LEN(len)`.
fn cmsg_len(len: usize) -> usize {
    // SAFETY: arithmetic on the length only.
    unsafe { libc::CMSG_LEN(len as libc::c_uint) as usize }
}

/// Sends each message of `plan` with one raw `sendmsg`, and hangs up if
/// the plan says so by closing `peer`. Every send must go through whole.
pub fn send(plan: &Plan, peer: OwnedFd, markers: &Markers) -> Option<OwnedFd> {
    for message in &plan.messages {
        let sent = send_message(peer.as_fd(), message, markers)
            .unwrap_or_else(|e| panic!("the peer's sendmsg: {e}; {message:?}"));
        assert_eq!(sent, message.data.len(), "{message:?}");
    }
    (!plan.hang_up).then_some(peer)
}

fn send_message(socket: BorrowedFd<'_>, message: &Message, markers: &Markers) -> io::Result<usize> {
    let fds: Vec<RawFd> = message
        .fds
        .iter()
        .map(|&i| markers.fds[i].as_raw_fd())
        .collect();
    let groups: Vec<&[RawFd]> = match message.groups {
        0 => Vec::new(),
        n => fds.chunks(fds.len().div_ceil(n)).collect(),
    };
    let credentials = message.credentials.then(|| libc::ucred {
        pid: std::process::id() as libc::pid_t,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
    });
    let length = groups.iter().map(|g| space(size_of_val(*g))).sum::<usize>()
        + credentials.map_or(0, |_| space(size_of::<libc::ucred>()));
    // u64s, for the alignment cmsghdr needs.
    let mut control = vec![0u64; length.div_ceil(8)];
    let mut data = message.data.clone();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if length > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = length;
    }
    // SAFETY: `msg` describes `control`, zeroed and `length` bytes long,
    // which holds exactly the headers written here, each within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        for group in &groups {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = cmsg_len(size_of_val(*group));
            let at = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, &fd) in group.iter().enumerate() {
                at.add(i).write_unaligned(fd);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
        if let Some(credentials) = credentials {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_CREDENTIALS;
            (*cmsg).cmsg_len = cmsg_len(size_of::<libc::ucred>());
            libc::CMSG_DATA(cmsg)
                .cast::<libc::ucred>()
                .write_unaligned(credentials);
        }
    }
    loop {
        // SAFETY: `msg` points at `data` and `control`, alive for the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
        match usize::try_from(sent) {
            Ok(sent) => return Ok(sent),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Raises the soft fd limit to the hard one: messages of up to 253 fds
/// each are in flight, which the kernel counts against it.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).unwrap();
}

/// Lowers `RLIMIT_NOFILE` so that exactly `free` fd numbers below it are
/// unused, and gives the limit to restore.
pub fn lower_fd_limit(free: usize) -> rustix::process::Rlimit {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let saved = getrlimit(Resource::Nofile);
    let mut unused = 0;
    let mut limit = 0;
    loop {
        // SAFETY: F_GETFD reads the flags of whatever the number names;
        // raw, since a number that may not be open cannot be borrowed.
        let open = unsafe { libc::fcntl(limit, libc::F_GETFD) } != -1;
        if !open {
            if unused == free {
                break;
            }
            unused += 1;
        }
        limit += 1;
    }
    let lowered = Rlimit {
        current: Some(limit as u64),
        maximum: saved.maximum,
    };
    setrlimit(Resource::Nofile, lowered).unwrap();
    saved
}

/// What a receive call gave, with every fd named by its marker.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Failed(ErrorKind),
    /// `recv`'s fd.
    Fd(usize),
    /// `recv_batch`'s fds, in the order they went into the empty slots.
    Fds(Vec<usize>),
    /// What `recv_fds` received.
    Received {
        data: Vec<u8>,
        fds: Vec<usize>,
        discarded: usize,
        data_truncated: bool,
        control_truncated: bool,
    },
    /// What `recv_many` received.
    Many {
        fds: Vec<usize>,
        rejected: usize,
        first_rejection: Option<ErrorKind>,
        discarded: usize,
    },
}

/// What must come of a plan, and whether something of it may be left in
/// the socket after the call.
#[derive(Debug)]
pub struct Expected {
    pub outcome: Outcome,
    pub leftover: bool,
}

/// The control buffer of one `recvmsg` of the library: room for
/// `MAX_FDS` fds and 512 bytes beside, as rustix counts room for fds.
const RECV_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS)) + 512;
/// The control buffer of each message of a `recvmmsg` of the library:
/// room for 16 fds and 64 bytes beside.
const BURST_SPACE: usize = rustix::cmsg_space!(ScmRights(16)) + 64;

/// One unit a receive reads: a message, or on a stream what is left of
/// one send, whose fds go with its first byte.
#[derive(Clone, Debug)]
struct Unit {
    data: Vec<u8>,
    fds: Vec<usize>,
}

/// What the kernel delivers of a unit: the fds it installed, and whether
/// it truncated the control data.
struct Delivered {
    fds: Vec<usize>,
    truncated: bool,
}

/// Linux's `scm_recv_unix` into `room` bytes of control data, with `free`
/// fd slots: credentials first, then the fds (those that fit, while slots
/// last), then a pidfd.
fn deliver(plan: &Plan, unit: &Unit, room: usize, free: &mut usize) -> Delivered {
    let mut left = room;
    let mut truncated = false;
    if plan.pass_credentials {
        left -= space(size_of::<libc::ucred>()).min(left);
    }
    let mut fds = Vec::new();
    if !unit.fds.is_empty() {
        let most = left.saturating_sub(cmsg_len(0)) / 4;
        let n = unit.fds.len().min(most).min(*free);
        fds = unit.fds[..n].to_vec();
        *free -= n;
        truncated = n < unit.fds.len();
        if n > 0 {
            left -= space(n * 4).min(left);
        }
    }
    // A pidfd comes with every read of a message's bytes.
    if plan.pass_pidfd {
        if left < cmsg_len(4) {
            truncated = true;
        } else if *free > 0 {
            *free -= 1;
        }
    }
    Delivered { fds, truncated }
}

/// The units waiting in the socket, in order: on a stream a send without
/// data sends nothing.
fn units(plan: &Plan) -> Vec<Unit> {
    let messages = plan.messages.iter();
    messages
        .filter(|m| plan.ty != Type::Stream || !m.data.is_empty())
        .map(|m| Unit {
            data: m.data.clone(),
            fds: m.fds.clone(),
        })
        .collect()
}

/// Reads up to `buffer` bytes of the first unit, as one `recvmsg`: what a
/// stream leaves of the unit stays for the next read.
fn read(units: &mut Vec<Unit>, ty: Type, buffer: usize) -> Option<(Unit, bool)> {
    if units.is_empty() {
        return None;
    }
    if ty == Type::Stream && units[0].data.len() > buffer {
        let rest = units[0].data.split_off(buffer);
        let read = units[0].clone();
        units[0] = Unit {
            data: rest,
            fds: Vec::new(),
        };
        return Some((read, false));
    }
    let unit = units.remove(0);
    let truncated = unit.data.len() > buffer;
    Some((unit, truncated))
}

/// How `wire::judge` is documented to judge a message, for the receive
/// calls that take `IO::FDPass`'s format: `Ok(fds kept)`, `Err(None)` for
/// nothing at all, `Err(Some(kind))` for a bad message.
fn judge(
    got_bytes: usize,
    byte: u8,
    kept: usize,
    arrived: usize,
    data_truncated: bool,
    control_truncated: bool,
) -> Result<usize, Option<ErrorKind>> {
    if control_truncated {
        return Err(Some(ErrorKind::QuotaExceeded));
    }
    if got_bytes == 0 {
        return if arrived == 0 {
            Err(None)
        } else {
            Err(Some(ErrorKind::InvalidData))
        };
    }
    if data_truncated || byte != 0 || kept == 0 {
        return Err(Some(ErrorKind::InvalidData));
    }
    Ok(kept)
}

/// What nothing at all means: an empty datagram or record is invalid
/// data; the end of a connection (a stream, or a record socket whose peer
/// has hung up) is the end.
fn nothing(plan: &Plan) -> ErrorKind {
    match plan.ty {
        Type::Datagram => ErrorKind::InvalidData,
        Type::SeqPacket if !plan.hang_up => ErrorKind::InvalidData,
        _ => ErrorKind::UnexpectedEof,
    }
}

/// What the library must make of `plan` (with the options as
/// [`set_options`] left them), on a non-blocking receiver.
pub fn expect(plan: &Plan) -> Expected {
    let mut units = units(plan);
    let mut free = plan.free_slots.unwrap_or(usize::MAX);
    let empty = |slots: &[bool]| slots.iter().filter(|&&full| !full).count();
    let nothing_to_read = || {
        if plan.hang_up {
            ErrorKind::UnexpectedEof
        } else {
            ErrorKind::WouldBlock
        }
    };
    let outcome = match &plan.call {
        Call::Recv | Call::RecvFds { .. } => {
            let room = match &plan.call {
                Call::RecvFds { slots } => empty(slots).min(MAX_FDS),
                _ => 1,
            };
            if room == 0 {
                Outcome::Failed(ErrorKind::InvalidInput)
            } else if let Some((unit, data_truncated)) = read(&mut units, plan.ty, 1) {
                let got = deliver(plan, &unit, RECV_SPACE, &mut free);
                let kept = got.fds.len().min(room);
                let byte = unit.data.first().copied().unwrap_or(0xff);
                let verdict = judge(
                    unit.data.len().min(1),
                    byte,
                    kept,
                    got.fds.len(),
                    data_truncated,
                    got.truncated,
                );
                match (verdict, &plan.call) {
                    (Err(None), _) => Outcome::Failed(nothing(plan)),
                    (Err(Some(kind)), _) => Outcome::Failed(kind),
                    (Ok(_), Call::Recv) => Outcome::Fd(got.fds[0]),
                    (Ok(_), _) if kept < got.fds.len() => Outcome::Failed(ErrorKind::InvalidData),
                    (Ok(_), _) => Outcome::Fds(got.fds),
                }
            } else {
                Outcome::Failed(nothing_to_read())
            }
        }
        Call::RecvWithFds { buffer, slots } => {
            if let Some((unit, data_truncated)) = read(&mut units, plan.ty, *buffer) {
                let got = deliver(plan, &unit, RECV_SPACE, &mut free);
                let kept = got.fds.len().min(empty(slots));
                Outcome::Received {
                    data: unit.data[..unit.data.len().min(*buffer)].to_vec(),
                    fds: got.fds[..kept].to_vec(),
                    discarded: got.fds.len() - kept,
                    data_truncated,
                    control_truncated: got.truncated,
                }
            } else if plan.hang_up {
                Outcome::Received {
                    data: Vec::new(),
                    fds: Vec::new(),
                    discarded: 0,
                    data_truncated: false,
                    control_truncated: false,
                }
            } else {
                Outcome::Failed(ErrorKind::WouldBlock)
            }
        }
        Call::RecvMany { slots } => many(plan, &mut units, empty(slots).min(MAX_BURST), &mut free),
    };
    // A call refused for want of room consumes nothing.
    let leftover = !units.is_empty() || outcome == Outcome::Failed(ErrorKind::InvalidInput);
    Expected { outcome, leftover }
}

/// `recv_many` with `room` for messages: one `recvmmsg` of one-byte
/// messages, each judged as `recv` judges it, its fds installed all
/// together before any is judged.
fn many(plan: &Plan, units: &mut Vec<Unit>, room: usize, free: &mut usize) -> Outcome {
    if room == 0 {
        return Outcome::Failed(ErrorKind::InvalidInput);
    }
    let mut taken = Vec::new();
    while taken.len() < room {
        match read(units, plan.ty, 1) {
            Some((unit, data_truncated)) => {
                let got = deliver(plan, &unit, BURST_SPACE, free);
                taken.push(Some((unit, data_truncated, got)));
            }
            // The end reads as an empty message, again and again.
            None if plan.hang_up => taken.push(None),
            None => break,
        }
    }
    if taken.is_empty() {
        return Outcome::Failed(ErrorKind::WouldBlock);
    }
    let (mut fds, mut rejected, mut first_rejection, mut discarded) = (Vec::new(), 0, None, 0);
    for message in taken {
        let verdict = match &message {
            Some((unit, data_truncated, got)) => judge(
                unit.data.len().min(1),
                unit.data.first().copied().unwrap_or(0xff),
                got.fds.len().min(1),
                got.fds.len(),
                *data_truncated,
                got.truncated,
            ),
            None => Err(None),
        };
        let bad = match verdict {
            Ok(_) => {
                let got = &message.as_ref().unwrap().2;
                fds.push(got.fds[0]);
                discarded += got.fds.len() - 1;
                continue;
            }
            Err(Some(kind)) => kind,
            Err(None) => match nothing(plan) {
                ErrorKind::UnexpectedEof if fds.is_empty() && rejected == 0 => {
                    return Outcome::Failed(ErrorKind::UnexpectedEof);
                }
                ErrorKind::UnexpectedEof => break,
                kind => kind,
            },
        };
        rejected += 1;
        first_rejection.get_or_insert(bad);
    }
    Outcome::Many {
        fds,
        rejected,
        first_rejection,
        discarded,
    }
}

/// Fds for the slots that hold one already: a pool made beforehand, so
/// that a call under a lowered fd limit opens nothing else.
pub struct Fillers(Vec<Option<OwnedFd>>);

impl Fillers {
    pub fn new(markers: &Markers) -> Fillers {
        let fds = (0..MAX_SLOTS)
            .map(|_| Some(markers.fds[1].try_clone().unwrap()))
            .collect();
        Fillers(fds)
    }
}

/// Makes the call of `plan` on `socket` and says what came of it. Checks
/// on the way what holds whatever came: full slots keep their fds, an
/// error leaves the storage as it was, the fds received go into the empty
/// slots in order, and each is close-on-exec. Every fd received is closed
/// before it returns.
pub fn receive(
    plan: &Plan,
    socket: BorrowedFd<'_>,
    markers: &Markers,
    fillers: &mut Fillers,
) -> Outcome {
    let slots = match &plan.call {
        Call::Recv => {
            return match recv_fd(socket) {
                Ok(fd) => {
                    assert_cloexec(&fd);
                    Outcome::Fd(markers.which(fd))
                }
                Err(e) => Outcome::Failed(e.kind()),
            };
        }
        Call::RecvFds { slots } | Call::RecvWithFds { slots, .. } | Call::RecvMany { slots } => {
            slots
        }
    };
    let mut storage: Vec<Option<OwnedFd>> = slots
        .iter()
        .zip(&mut fillers.0)
        .map(|(&full, filler)| if full { filler.take() } else { None })
        .collect();
    let before: Vec<Option<RawFd>> = storage
        .iter()
        .map(|slot| slot.as_ref().map(AsRawFd::as_raw_fd))
        .collect();
    let outcome = match &plan.call {
        Call::RecvFds { .. } => match recv_batch(socket, &mut storage) {
            Ok(n) => {
                let fds = filled(&before, &storage, markers);
                assert_eq!(fds.len(), n);
                Outcome::Fds(fds)
            }
            Err(e) => Outcome::Failed(e.kind()),
        },
        Call::RecvWithFds { buffer, .. } => {
            let mut data = vec![0xee; *buffer];
            match recv_fds(socket, &mut data, &mut storage) {
                Ok(got) => {
                    let fds = filled(&before, &storage, markers);
                    assert_eq!(fds.len(), got.fds_received, "{got:?}");
                    Outcome::Received {
                        data: data[..got.bytes].to_vec(),
                        fds,
                        discarded: got.fds_discarded,
                        data_truncated: got.data_truncated,
                        control_truncated: got.control_truncated,
                    }
                }
                Err(e) => Outcome::Failed(e.kind()),
            }
        }
        Call::RecvMany { .. } => match recv_many(socket, &mut storage) {
            Ok(got) => {
                assert_eq!(got.rejected > 0, got.first_rejection.is_some(), "{got:?}");
                let fds = filled(&before, &storage, markers);
                assert_eq!(fds.len(), got.fds_received, "{got:?}");
                Outcome::Many {
                    fds,
                    rejected: got.rejected,
                    first_rejection: got.first_rejection.map(|e| e.kind()),
                    discarded: got.fds_discarded,
                }
            }
            Err(e) => Outcome::Failed(e.kind()),
        },
        Call::Recv => unreachable!("received above"),
    };
    if let Outcome::Failed(kind) = outcome {
        let after: Vec<Option<RawFd>> = storage
            .iter()
            .map(|slot| slot.as_ref().map(AsRawFd::as_raw_fd))
            .collect();
        assert_eq!(before, after, "the storage changed on an error ({kind:?})");
    }
    for ((slot, &full), filler) in storage.into_iter().zip(slots).zip(&mut fillers.0) {
        if full {
            *filler = slot;
        }
    }
    outcome
}

/// The markers of the fds a call put in `storage`, checking that full
/// slots kept their fds and that the new ones fill the empty slots from
/// the first on.
fn filled(before: &[Option<RawFd>], storage: &[Option<OwnedFd>], markers: &Markers) -> Vec<usize> {
    let mut fds = Vec::new();
    let mut gap = false;
    for (was, now) in before.iter().zip(storage) {
        match (was, now) {
            (Some(was), now) => {
                let now = now.as_ref().map(AsRawFd::as_raw_fd);
                assert_eq!(now, Some(*was), "a full slot was changed");
            }
            (None, Some(fd)) => {
                assert!(!gap, "an empty slot was skipped");
                assert_cloexec(fd);
                fds.push(markers.which(fd));
            }
            (None, None) => gap = true,
        }
    }
    fds
}

fn assert_cloexec(fd: &OwnedFd) {
    let flags = rustix::io::fcntl_getfd(fd).unwrap();
    assert!(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "a received fd is not close-on-exec"
    );
}
