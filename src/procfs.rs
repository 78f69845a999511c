//! What Linux's `/proc` says about a process, read by pure functions: the
//! socket tables of `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`, the ids in
//! `/proc/PID/status`, and why the kernel refused this process access to
//! another. No file is read here; the backend reads them and hands over
//! the bytes. Any line, however odd, is taken or skipped: none panics.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;

use crate::{SocketAddress, SocketFamily, SocketInfo, SocketType};

/// `TCP_LISTEN` in the `st` column of `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;
/// `__SO_ACCEPTCON` in the `Flags` column of `/proc/net/unix`.
const SO_ACCEPTCON: u32 = 1 << 16;
/// `CAP_SYS_PTRACE`, as a bit of `CapEff` in `/proc/PID/status`.
const CAP_SYS_PTRACE: u32 = 19;

/// The sockets of a network namespace, by inode number, as its tables list
/// them.
///
/// A line of `/proc/net/unix` ends with the socket's name exactly as it
/// was bound, and a name may hold a newline: a process can bind a name that
/// reads as a line of its own, claiming any inode. An inode listed twice is
/// therefore trusted in neither place, and described as unknown.
#[derive(Debug, Default)]
pub(crate) struct Sockets(HashMap<u64, Option<SocketInfo>>);

impl Sockets {
    /// Adds the sockets of `/proc/net/tcp` or `udp` (`family` `Inet`), or
    /// of `tcp6` or `udp6` (`Inet6`).
    pub(crate) fn add_inet(&mut self, table: &[u8], family: SocketFamily, ty: SocketType) {
        for line in table.split(|&b| b == b'\n') {
            if let Some((inode, socket)) = inet_line(line, family, ty) {
                self.add(inode, socket);
            }
        }
    }

    /// Adds the sockets of `/proc/net/unix`.
    pub(crate) fn add_unix(&mut self, table: &[u8]) {
        for line in table.split(|&b| b == b'\n') {
            if let Some((inode, socket)) = unix_line(line) {
                self.add(inode, socket);
            }
        }
    }

    fn add(&mut self, inode: u64, socket: SocketInfo) {
        self.0
            .entry(inode)
            .and_modify(|seen| *seen = None)
            .or_insert(Some(socket));
    }

    /// The socket with inode number `inode`, if the tables tell what it is.
    pub(crate) fn get(&self, inode: u64) -> Option<&SocketInfo> {
        self.0.get(&inode)?.as_ref()
    }
}

/// A socket whose tables are not read here (netlink, packet, raw…), or
/// whose line could not be trusted.
pub(crate) fn unknown_socket() -> SocketInfo {
    SocketInfo {
        family: SocketFamily::Other,
        socket_type: SocketType::Other,
        listening: false,
        local: None,
    }
}

/// One line of `/proc/net/tcp` and the like:
/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode …`.
fn inet_line(line: &[u8], family: SocketFamily, ty: SocketType) -> Option<(u64, SocketInfo)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    // The header's first field is `sl`; each socket's, its slot and `:`.
    fields.next()?.strip_suffix(':')?;
    let local = inet_address(fields.next()?, family)?;
    let _remote = fields.next()?;
    let state = hex_u8(fields.next()?)?;
    let inode = fields.nth(5)?.parse().ok().filter(|&inode| inode != 0)?;
    Some((
        inode,
        SocketInfo {
            family,
            socket_type: ty,
            listening: ty == SocketType::Stream && state == TCP_LISTEN,
            local: Some(SocketAddress::Inet(local)),
        },
    ))
}

/// `0100007F:1F90`: the address as the kernel holds it (in network order),
/// printed as 32-bit words of this machine's order, and the port.
fn inet_address(text: &str, family: SocketFamily) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::try_from(hex(port)?).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let word = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::try_from(hex(word)?).ok()?.to_ne_bytes())
    };
    let ip = match (family, ip.len()) {
        (SocketFamily::Inet, 8) => Ipv4Addr::from(word(0)?).into(),
        (SocketFamily::Inet6, 32) => {
            let mut bytes = [0; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One line of `/proc/net/unix`:
/// `Num: RefCount Protocol Flags Type St Inode [Path]`, the path being the
/// rest of the line after one space, `@` first for an abstract name.
fn unix_line(line: &[u8]) -> Option<(u64, SocketInfo)> {
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        let start = rest.iter().position(|&b| b != b' ')?;
        let len = rest[start..]
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(rest.len() - start);
        let field = &rest[start..start + len];
        rest = &rest[start + len..];
        Some(field)
    };
    field()?.strip_suffix(b":")?;
    let _refcount = field()?;
    let _protocol = field()?;
    let flags = u32::try_from(hex(std::str::from_utf8(field()?).ok()?)?).ok()?;
    let ty = hex(std::str::from_utf8(field()?).ok()?)?;
    let _state = field()?;
    let inode: u64 = std::str::from_utf8(field()?).ok()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let name = rest.strip_prefix(b" ").unwrap_or(rest);
    let local = match name {
        [] => None,
        [b'@', abstract_name @ ..] => Some(SocketAddress::Abstract(abstract_name.to_vec())),
        path => Some(SocketAddress::Path(OsStr::from_bytes(path).into())),
    };
    let socket_type = match ty {
        1 => SocketType::Stream,
        2 => SocketType::Datagram,
        5 => SocketType::SeqPacket,
        _ => SocketType::Other,
    };
    Some((
        inode,
        SocketInfo {
            family: SocketFamily::Unix,
            socket_type,
            listening: flags & SO_ACCEPTCON != 0,
            local,
        },
    ))
}

/// A hexadecimal field of at most 16 digits, and nothing else (no sign).
fn hex(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn hex_u8(text: &str) -> Option<u8> {
    u8::try_from(hex(text)?).ok()
}

/// What `/proc/PID/status` says of a process's ids.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// Real, effective, saved and filesystem uid.
    pub(crate) uids: Option<[u32; 4]>,
    /// Real, effective, saved and filesystem gid.
    pub(crate) gids: Option<[u32; 4]>,
    /// The process (thread group) that a thread belongs to.
    pub(crate) tgid: Option<u32>,
    /// The parent process.
    pub(crate) ppid: Option<u32>,
    /// The effective capabilities.
    pub(crate) cap_eff: Option<u64>,
}

impl Status {
    /// Reads the text of `/proc/PID/status`; a field that is missing or
    /// malformed is `None`.
    pub(crate) fn parse(text: &[u8]) -> Status {
        let mut status = Status::default();
        // Only the first line of each key counts, well formed or not.
        let mut seen = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let value = value.trim();
            match key {
                "Uid" => status.uids = four(value),
                "Gid" => status.gids = four(value),
                "Tgid" => status.tgid = value.parse().ok(),
                "PPid" => status.ppid = value.parse().ok(),
                "CapEff" => status.cap_eff = hex(value),
                _ => {}
            }
        }
        status
    }

    /// Whether the effective capabilities hold `CAP_SYS_PTRACE`.
    pub(crate) fn can_ptrace(&self) -> bool {
        self.cap_eff
            .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
    }
}

fn four(value: &str) -> Option<[u32; 4]> {
    let mut ids = value.split_ascii_whitespace().map(|id| id.parse().ok());
    let four = [ids.next()??, ids.next()??, ids.next()??, ids.next()??];
    ids.next().is_none().then_some(four)
}

/// What this process asked of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// To read its fd table in `/proc` (`PTRACE_MODE_READ_FSCREDS`: the
    /// filesystem ids count, and Yama has no say).
    Read,
    /// To take an fd (`pidfd_getfd`: `PTRACE_MODE_ATTACH_REALCREDS`, the
    /// real ids, and Yama's rules).
    Attach,
}

/// What the kernel weighs when one process asks for another's fds, as far
/// as `/proc` shows it.
#[derive(Debug)]
pub(crate) struct Standing {
    pub(crate) pid: u32,
    pub(crate) asked: Asked,
    /// `kernel.yama.ptrace_scope`; `None` without Yama.
    pub(crate) ptrace_scope: Option<u32>,
    /// This process's status.
    pub(crate) own: Status,
    /// The other process's status; `None` if it could not be read.
    pub(crate) target: Option<Status>,
    /// Whether the other process is dumpable; `None` if unknown.
    pub(crate) dumpable: Option<bool>,
    /// Whether this process is an ancestor of the other; `None` if unknown.
    pub(crate) ancestor: Option<bool>,
}

/// Why the kernel refused (`EPERM`/`EACCES`), and what to do about it, in
/// the order the kernel checks: Yama's "no one", then the ids, then
/// dumpability, then Yama's other rules. Each is overridden by
/// `CAP_SYS_PTRACE` but the first.
pub(crate) fn refusal(standing: &Standing) -> String {
    let Standing { pid, asked, .. } = *standing;
    let what = match asked {
        Asked::Read => format!("read the fd table of process {pid} (/proc/{pid}/fd)"),
        Asked::Attach => format!("take the fds of process {pid}"),
    };
    let capable = standing.own.can_ptrace();
    let attach = asked == Asked::Attach;
    let yama = |scope| attach && standing.ptrace_scope == Some(scope);
    let allow_same_user =
        "or let a process of the same user do it with `sysctl kernel.yama.ptrace_scope=0`";
    if yama(3) {
        return "kernel.yama.ptrace_scope is 3, under which no process may take another's \
                fds, not even root; it stays 3 until the next boot"
            .into();
    }
    let own_ids = |ids: Option<[u32; 4]>| {
        let i = if attach { 0 } else { 3 };
        ids.map(|ids| ids[i])
    };
    let (own_uid, own_gid) = (own_ids(standing.own.uids), own_ids(standing.own.gids));
    if let (Some(target), false) = (&standing.target, capable) {
        let same = |own: Option<u32>, theirs: Option<[u32; 4]>| match (own, theirs) {
            (Some(own), Some(theirs)) => theirs[..3].iter().all(|&id| id == own),
            _ => true,
        };
        if !same(own_uid, target.uids) || !same(own_gid, target.gids) {
            let ids = |ids: Option<[u32; 4]>| match ids {
                Some([r, e, s, _]) if r == e && e == s => format!("{e}"),
                Some([r, e, s, _]) => format!("{r} (effective {e}, saved {s})"),
                None => "unknown".into(),
            };
            let (uid, gid) = (ids(target.uids), ids(target.gids));
            let own = |id: Option<u32>| id.map_or("unknown".into(), |id| id.to_string());
            return format!(
                "process {pid} runs as uid {uid}, gid {gid}, and this process as uid {}, gid {}: \
                 only the same user, or a process with CAP_SYS_PTRACE, may {what}; \
                 run as uid {uid}, or as root",
                own(own_uid),
                own(own_gid),
            );
        }
    }
    if standing.dumpable == Some(false) && !capable {
        return format!(
            "process {pid} is not dumpable (a set-uid or set-gid program, or one that said so \
             with prctl(PR_SET_DUMPABLE)): only a process with CAP_SYS_PTRACE may {what}; \
             run as root"
        );
    }
    if yama(2) && !capable {
        return format!(
            "kernel.yama.ptrace_scope is 2, under which only a process with CAP_SYS_PTRACE may \
             {what}: run as root, {allow_same_user}"
        );
    }
    if yama(1) && !capable && standing.ancestor != Some(true) {
        return format!(
            "kernel.yama.ptrace_scope is 1, under which only an ancestor of process {pid}, or \
             a process with CAP_SYS_PTRACE, may {what}, and this process is neither: run as \
             root, {allow_same_user}"
        );
    }
    if capable {
        return format!(
            "this process has CAP_SYS_PTRACE and may still not {what}: process {pid} may be in \
             a user namespace this one has no power over, or a security module (SELinux, \
             AppArmor) or a seccomp filter forbids it"
        );
    }
    let allowing = match asked {
        Asked::Read => "uid and gid allow it",
        Asked::Attach => "uid, gid and kernel.yama.ptrace_scope allow it",
    };
    format!(
        "not permitted to {what}, though {allowing}: a security module (SELinux, AppArmor) or \
         a seccomp filter (as in a container) forbids it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &[u8] = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F91 0100007F:C351 06 00000000:00000000 03:00000DA1 00000000     0        0 0 3 0000000000000000
";

    fn ipv4_word(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn tcp_listeners_and_connections() {
        let mut sockets = Sockets::default();
        let table = String::from_utf8(TCP.to_vec())
            .unwrap()
            .replace("0100007F", &ipv4_word([127, 0, 0, 1]));
        sockets.add_inet(table.as_bytes(), SocketFamily::Inet, SocketType::Stream);
        let listener = sockets.get(4242).unwrap();
        assert!(listener.listening && listener.is_tcp_listener());
        assert_eq!(
            listener.local.as_ref().unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert!(!sockets.get(4243).unwrap().listening);
        // TIME_WAIT: no inode, no socket.
        assert!(sockets.get(0).is_none());
        assert_eq!(sockets.0.len(), 2);
    }

    #[test]
    fn ipv6_and_udp() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let words: String = ip
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
            .collect();
        let line = format!(
            "  1: {words}:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   100        0 99 2 0000000000000000 0\n"
        );
        let mut sockets = Sockets::default();
        sockets.add_inet(line.as_bytes(), SocketFamily::Inet6, SocketType::Datagram);
        let udp = sockets.get(99).unwrap();
        assert!(udp.is_udp() && !udp.listening);
        assert_eq!(udp.local.as_ref().unwrap().to_string(), "[2001:db8::1]:53");
        // The same line read as IPv4 has an address of the wrong length.
        let mut v4 = Sockets::default();
        v4.add_inet(line.as_bytes(), SocketFamily::Inet, SocketType::Datagram);
        assert!(v4.get(99).is_none());
    }

    #[test]
    fn unix_sockets_with_paths_spaces_and_abstract_names() {
        let table = b"Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/app.sock
0000000000000000: 00000002 00000000 00000000 0002 01 12 @abstract
0000000000000000: 00000003 00000000 00000000 0001 03 13
0000000000000000: 00000002 00000000 00010000 0005 01 14 /tmp/a b  \xff
0000000000000000: 00000002 00000000 00000000 0001 01    15 /x
";
        let mut sockets = Sockets::default();
        sockets.add_unix(table);
        let listener = sockets.get(11).unwrap();
        assert!(listener.is_unix_listener());
        assert_eq!(
            listener.local,
            Some(SocketAddress::Path("/run/app.sock".into()))
        );
        let abstract_one = sockets.get(12).unwrap();
        assert_eq!(abstract_one.socket_type, SocketType::Datagram);
        assert_eq!(
            abstract_one.local,
            Some(SocketAddress::Abstract(b"abstract".to_vec()))
        );
        assert_eq!(sockets.get(13).unwrap().local, None);
        let odd = sockets.get(14).unwrap();
        assert_eq!(odd.socket_type, SocketType::SeqPacket);
        assert!(odd.listening);
        assert_eq!(
            odd.local,
            Some(SocketAddress::Path(
                OsStr::from_bytes(b"/tmp/a b  \xff").into()
            ))
        );
        assert_eq!(
            sockets.get(15).unwrap().local,
            Some(SocketAddress::Path("/x".into()))
        );
    }

    #[test]
    fn a_name_that_forges_a_line_makes_its_inode_unknown() {
        // A socket bound to "/a\n0000: 00000002 00000000 00010000 0001 01 11 /b"
        // prints a second line that claims inode 11 listens at /b.
        let table = b"0000: 00000002 00000000 00010000 0001 01 11 /real
0000: 00000002 00000000 00000000 0001 01 77 /a
0000: 00000002 00000000 00010000 0001 01 11 /b
";
        let mut sockets = Sockets::default();
        sockets.add_unix(table);
        assert!(sockets.get(11).is_none());
        assert!(sockets.get(77).is_some());
    }

    #[test]
    fn odd_and_hostile_lines_are_skipped() {
        let lines: &[&[u8]] = &[
            b"",
            b"\n\n",
            b"   ",
            b"0:",
            b"0: 0100007F",
            b"0: 0100007F:1F90 00000000:0000 0A",
            b"0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0",
            b"0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 notanumber",
            b"0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 -1",
            b"0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 99999999999999999999999",
            b"0: +100007F:1F90 00000000:0000 0A 0 0 0 0 0 5",
            b"0: 0100007F:+F90 00000000:0000 0A 0 0 0 0 0 5",
            b"0: 0100007F:FFFFF 00000000:0000 0A 0 0 0 0 0 5",
            b"0: 0100007F:1F90 00000000:0000 1FF 0 0 0 0 0 5",
            b"0: \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9:1F90 00000000:0000 0A 0 0 0 0 0 5",
            b"0: 0100007F1:1F90 00000000:0000 0A 0 0 0 0 0 5",
            b"0: :1F90 00000000:0000 0A 0 0 0 0 0 5",
            b"0: 0100007F: 00000000:0000 0A 0 0 0 0 0 5",
            b"\xff\xfe: 0100007F:1F90",
            b"0: 00000002 00000000 zz 0001 01 5 /x",
            b"0: 00000002 00000000 00010000 0001 01",
            b"0: 00000002 00000000 00010000 0001 01 0 /x",
            b"0: 00000002 00000000 100000000 0001 01 5 /x",
            b"0: 00000002 00000000 00010000 00000000000000001 01 5 /x",
            b"0: 00000002 00000000 00010000 \xff 01 5 /x",
            b"sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode",
            b"Num RefCount Protocol Flags Type St Inode Path",
        ];
        for line in lines {
            let mut sockets = Sockets::default();
            sockets.add_inet(line, SocketFamily::Inet, SocketType::Stream);
            sockets.add_inet(line, SocketFamily::Inet6, SocketType::Datagram);
            sockets.add_unix(line);
            assert!(sockets.0.is_empty(), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small fixed generator: the same inputs every run.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789ABCDEFabcdef: @/\n\t\xff-+";
        for _ in 0..2000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut sockets = Sockets::default();
            sockets.add_inet(&bytes, SocketFamily::Inet, SocketType::Stream);
            sockets.add_inet(&bytes, SocketFamily::Inet6, SocketType::Stream);
            sockets.add_unix(&bytes);
            let _ = Status::parse(&bytes);
        }
    }

    const STATUS: &[u8] = b"Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\nPPid:\t17\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nCapEff:\t0000000000080000\n";

    #[test]
    fn status_fields() {
        let status = Status::parse(STATUS);
        assert_eq!(
            status,
            Status {
                uids: Some([1000; 4]),
                gids: Some([100; 4]),
                tgid: Some(4242),
                ppid: Some(17),
                cap_eff: Some(0x80000),
            }
        );
        assert!(status.can_ptrace());
        let odd = Status::parse(
            b"Uid:\t1\t2\t3\nGid:\tx\t1\t1\t1\nTgid: -4\nCapEff:\tzz\nUid:\t5\t5\t5\t5\n",
        );
        assert_eq!(odd, Status::default());
        assert!(!odd.can_ptrace());
    }

    fn ids(uid: u32, gid: u32) -> Status {
        Status {
            uids: Some([uid; 4]),
            gids: Some([gid; 4]),
            ..Status::default()
        }
    }

    fn standing(asked: Asked, scope: Option<u32>, own: Status, target: Status) -> Standing {
        Standing {
            pid: 42,
            asked,
            ptrace_scope: scope,
            own,
            target: Some(target),
            dumpable: Some(true),
            ancestor: Some(false),
        }
    }

    #[test]
    fn each_refusal_names_what_stands_in_the_way() {
        let root = ids(0, 0);
        let nobody = ids(65534, 65534);
        let cases = [
            // Another user.
            (
                standing(Asked::Attach, None, nobody, ids(0, 0)),
                &[
                    "process 42 runs as uid 0, gid 0",
                    "uid 65534",
                    "CAP_SYS_PTRACE",
                ][..],
            ),
            (
                standing(Asked::Read, Some(1), ids(5, 5), ids(5, 6)),
                &["gid 6", "read the fd table of process 42"][..],
            ),
            // The same user, Yama in the way.
            (
                standing(Asked::Attach, Some(1), ids(5, 5), ids(5, 5)),
                &["ptrace_scope is 1", "ancestor", "ptrace_scope=0"][..],
            ),
            (
                standing(Asked::Attach, Some(2), ids(5, 5), ids(5, 5)),
                &["ptrace_scope is 2", "CAP_SYS_PTRACE"][..],
            ),
            (
                standing(Asked::Attach, Some(3), root, ids(0, 0)),
                &["ptrace_scope is 3", "next boot"][..],
            ),
            // Capable, and refused all the same.
            (
                standing(
                    Asked::Attach,
                    Some(1),
                    Status {
                        cap_eff: Some(1 << 19),
                        ..ids(0, 0)
                    },
                    ids(5, 5),
                ),
                &["has CAP_SYS_PTRACE", "user namespace"][..],
            ),
            // Nothing seen stands in the way.
            (
                standing(Asked::Attach, None, ids(5, 5), ids(5, 5)),
                &["security module"][..],
            ),
        ];
        for (standing, says) in cases {
            let message = refusal(&standing);
            for part in says {
                assert!(message.contains(part), "{standing:?}: {message}");
            }
        }
        // Reading the fd table: Yama has no say.
        let read = standing(Asked::Read, Some(3), ids(5, 5), ids(5, 5));
        assert!(!refusal(&read).contains("ptrace_scope is"));
        // An ancestor passes Yama's scope 1.
        let mut parent = standing(Asked::Attach, Some(1), ids(5, 5), ids(5, 5));
        parent.ancestor = Some(true);
        assert!(!refusal(&parent).contains("ptrace_scope is"));
        // Not dumpable.
        let mut setuid = standing(Asked::Attach, None, ids(5, 5), ids(5, 5));
        setuid.dumpable = Some(false);
        assert!(refusal(&setuid).contains("not dumpable"));
        // A set-uid target shows its three uids.
        let mixed = Status {
            uids: Some([5, 0, 0, 0]),
            gids: Some([5; 4]),
            ..Status::default()
        };
        let message = refusal(&standing(Asked::Attach, None, ids(5, 5), mixed));
        assert!(
            message.contains("uid 5 (effective 0, saved 0)"),
            "{message}"
        );
    }
}
