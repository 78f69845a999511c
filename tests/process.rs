//! Another process's fds, through the public API: a Python process that
//! knows nothing of fd passing holds a file, a pipe and sockets of each
//! kind; they are listed and copied out of it, and every error leaves this
//! process's fd count as it was.
#![cfg(fdpass_linux_kernel)]

mod util;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, ChildStdin, Command, Stdio};

use io_fdpass::process::Process;
use io_fdpass::{FdKind, SocketAddress, SocketFamily, SocketType};
use util::{is_cloexec, temp_path, NoLeak};

/// Opens what the tests look for, prints the fd numbers and the port, and
/// waits for its stdin to close. The pipe's write end has "from python" in
/// it.
const HOLDER: &str = r#"import json, os, socket, sys
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen()
tcp6 = socket.socket(socket.AF_INET6); tcp6.bind(("::1", 0)); tcp6.listen()
udp = socket.socket(type=socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
unix = socket.socket(socket.AF_UNIX); unix.bind(sys.argv[1]); unix.listen()
hidden = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); hidden.bind("\0" + sys.argv[2])
connected, _ = socket.socketpair()
r, w = os.pipe(); os.write(w, b"from python")
f = open(sys.argv[3])
null = open("/dev/null")
print(json.dumps(dict(null=null.fileno(), tcp=tcp.fileno(), port=tcp.getsockname()[1], tcp6=tcp6.fileno(),
  port6=tcp6.getsockname()[1], udp=udp.fileno(), udp_port=udp.getsockname()[1],
  unix=unix.fileno(), hidden=hidden.fileno(), connected=connected.fileno(), pipe=r,
  file=f.fileno())), flush=True)
sys.stdin.read()
"#;

/// The Python process, its fds by name, and its stdin, which it waits on.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    fds: String,
    unix: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl Holder {
    fn start() -> Holder {
        let unix = temp_path("unix");
        let file = temp_path("file");
        std::fs::write(&file, "text").unwrap();
        let hidden = format!("io-fdpass-test-{}", std::process::id());
        let mut child = util::peers::python()
            .args(["-c", HOLDER])
            .arg(&unix)
            .arg(&hidden)
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut fds = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut fds)
            .unwrap();
        let stdin = child.stdin.take();
        Holder {
            child,
            stdin,
            fds,
            unix,
            file,
        }
    }

    /// A number it printed.
    fn get(&self, name: &str) -> i32 {
        let key = format!("\"{name}\": ");
        let at = self
            .fds
            .find(&key)
            .unwrap_or_else(|| panic!("{name} in {}", self.fds))
            + key.len();
        let digits: String = self.fds[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.unix);
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn lists_what_another_process_holds() {
    let check = NoLeak::start();
    let holder = Holder::start();
    let fds = Process::open(holder.pid()).unwrap().fds().unwrap();
    let kind = |name: &str| {
        let fd = holder.get(name);
        fds.iter()
            .find(|f| f.fd == fd)
            .unwrap_or_else(|| panic!("fd {fd} ({name}) not in {fds:?}"))
            .kind
            .clone()
    };
    let socket = |name| kind(name).socket().cloned().unwrap();

    let tcp = socket("tcp");
    assert!(tcp.is_tcp_listener(), "{tcp:?}");
    assert_eq!(tcp.family, SocketFamily::Inet);
    let at = format!("127.0.0.1:{}", holder.get("port"));
    assert_eq!(tcp.local, Some(SocketAddress::Inet(at.parse().unwrap())));
    assert_eq!(
        kind("tcp").to_string(),
        format!("a listening TCP socket on {at}")
    );

    let tcp6 = socket("tcp6");
    assert!(tcp6.is_tcp_listener() && tcp6.family == SocketFamily::Inet6);
    let at6 = format!("[::1]:{}", holder.get("port6"));
    assert_eq!(tcp6.local, Some(SocketAddress::Inet(at6.parse().unwrap())));

    let udp = socket("udp");
    assert!(udp.is_udp() && !udp.listening, "{udp:?}");
    let at = format!("127.0.0.1:{}", holder.get("udp_port"));
    assert_eq!(udp.local, Some(SocketAddress::Inet(at.parse().unwrap())));

    let unix = socket("unix");
    assert!(unix.is_unix_listener(), "{unix:?}");
    assert_eq!(unix.local, Some(SocketAddress::Path(holder.unix.clone())));

    let hidden = socket("hidden");
    assert_eq!(hidden.socket_type, SocketType::SeqPacket);
    let name = format!("io-fdpass-test-{}", std::process::id());
    assert_eq!(
        hidden.local,
        Some(SocketAddress::Abstract(name.into_bytes()))
    );

    let connected = socket("connected");
    assert_eq!(connected.family, SocketFamily::Unix);
    assert!(!connected.listening && connected.local.is_none());

    assert_eq!(kind("pipe"), FdKind::Pipe);
    assert_eq!(kind("file"), FdKind::File(Some(holder.file.clone())));
    assert_eq!(kind("null"), FdKind::CharDevice(Some("/dev/null".into())));
    assert_eq!(kind("null").to_string(), "the character device /dev/null");
    // Sorted by number, each once.
    assert!(fds.windows(2).all(|w| w[0].fd < w[1].fd), "{fds:?}");
    drop(holder);
    check.assert_unchanged();
}

#[test]
fn a_copy_is_close_on_exec_and_is_the_same_socket_or_pipe() {
    let check = NoLeak::start();
    let holder = Holder::start();
    let process = Process::open(holder.pid()).unwrap();

    // The holder never accepts: a connection to its port reaches the copy.
    let listener = std::net::TcpListener::from(process.copy_fd(holder.get("tcp")).unwrap());
    assert!(is_cloexec(&listener));
    let mut client =
        std::net::TcpStream::connect(("127.0.0.1", holder.get("port") as u16)).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut got = [0; 5];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    let pipe = process.copy_fd(holder.get("pipe")).unwrap();
    assert!(is_cloexec(&pipe));
    let mut text = [0; 11];
    std::fs::File::from(pipe).read_exact(&mut text).unwrap();
    assert_eq!(&text, b"from python");

    drop((listener, client, accepted, process, holder));
    check.assert_unchanged();
}

#[test]
fn no_such_process_fd_or_thread_leaves_nothing_open() {
    let check = NoLeak::start();
    // Beyond the highest pid Linux can give (PID_MAX_LIMIT, 2^22).
    let e = Process::open(99_999_999).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no process 99999999"), "{e}");
    for pid in [0, u32::MAX] {
        let e = Process::open(pid).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    check.assert_unchanged();

    let holder = Holder::start();
    let before = util::fd_count();
    let process = Process::open(holder.pid()).unwrap();
    let e = process.copy_fd(999).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("has no fd 999"), "{e}");
    let e = process.copy_fd(-1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(process);
    assert_eq!(util::fd_count(), before);
    drop(holder);
    check.assert_unchanged();

    // A thread's id is not a process's.
    let (tell, wait) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || wait.recv());
    let me = std::process::id();
    let tid: u32 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .find(|&tid| tid != me)
        .unwrap();
    let e = Process::open(tid).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains(&format!("give {me}")), "{e}");
    tell.send(()).unwrap();
    thread.join().unwrap().unwrap();
    check.assert_unchanged();
}

#[test]
fn a_process_that_exits_midway_is_not_found() {
    let check = NoLeak::start();
    // Exited, not yet collected: a zombie, which has no fds.
    let mut child = Command::new("true").spawn().unwrap();
    let process = Process::open(child.id()).unwrap();
    wait_until_exited(&process);
    for e in [process.copy_fd(0).unwrap_err(), process.fds().unwrap_err()] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("has exited"), "{e}");
    }
    // Collected: gone altogether.
    child.wait().unwrap();
    for e in [
        process.copy_fd(0).unwrap_err(),
        process.fds().unwrap_err(),
        process.terminate().unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("has exited"), "{e}");
    }
    drop(process);
    check.assert_unchanged();
}

#[test]
fn terminate_stops_that_process() {
    let check = NoLeak::start();
    let mut child = Command::new("sleep").arg("600").spawn().unwrap();
    let process = Process::open(child.id()).unwrap();
    assert!(!process.has_exited().unwrap());
    process.terminate().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(15));
    assert!(process.has_exited().unwrap());
    // The pidfd is readable, as the docs say.
    let mut fds = [rustix::event::PollFd::new(
        &process,
        rustix::event::PollFlags::IN,
    )];
    assert_eq!(rustix::event::poll(&mut fds, None).unwrap(), 1);
    assert!(process.as_fd().as_raw_fd() > 2);
    drop(process);
    check.assert_unchanged();
}

#[test]
fn this_process_is_described_the_same_way() {
    let check = NoLeak::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let dir = std::fs::File::open("/").unwrap();
    let (pipe, write) = rustix::pipe::pipe().unwrap();
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let me = Process::open(std::process::id()).unwrap();
    let listed = me.fds().unwrap();
    let fds = [
        listener.as_fd(),
        null.as_fd(),
        dir.as_fd(),
        pipe.as_fd(),
        eventfd.as_fd(),
        me.as_fd(),
    ];
    for fd in fds {
        let kind = FdKind::of(fd).unwrap();
        let found = listed.iter().find(|l| l.fd == fd.as_raw_fd()).unwrap();
        assert_eq!(found.kind, kind, "fd {}", fd.as_raw_fd());
    }
    assert_eq!(FdKind::of(&null).unwrap().word(), "character device");
    assert!(
        matches!(FdKind::of(&eventfd).unwrap(), FdKind::Other(Some(name)) if name.contains("eventfd"))
    );
    drop((me, listener, null, dir, pipe, write, eventfd));
    check.assert_unchanged();
}

/// Waits, without collecting it, until the process has exited.
fn wait_until_exited(process: &Process) {
    let mut fds = [rustix::event::PollFd::new(
        process,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: 60,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&timeout)).unwrap(), 1);
    assert!(process.has_exited().unwrap());
}
