//! The Windows API with a real second process: a file, a pipe and a socket
//! passed to it; every way a peer can make a receive fail, a sender this
//! process may not open included; the confirmed mode with a receiver that
//! leaves without fetching. Each checks that this process's handle count is
//! unchanged.

#![cfg(windows)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::{AsHandle, AsRawHandle, OwnedHandle};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use io_fdpass::{
    recv_confirmed, recv_handle, recv_handles, recv_socket, send_confirmed, send_handle,
    send_handles, send_socket, MAX_HANDLES,
};
use io_fdpass_test_support::{handle_count, temp_path, NoLeak, OpensFds};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// The role a re-run of this test binary plays, and the port it connects to.
const ROLE: &str = "IO_FDPASS_TEST_ROLE";
const PORT: &str = "IO_FDPASS_TEST_PORT";

/// A connected pair of TCP sockets on 127.0.0.1.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

/// Runs this test binary again as `role` in the test `test`, connected to
/// a listener here; returns the child and this side of the connection.
fn child(test: &str, role: &str) -> (Child, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PORT, listener.local_addr().unwrap().port().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    (child, stream)
}

/// In a child: the role it plays and its connection to the parent.
fn as_child() -> Option<(String, TcpStream)> {
    let role = std::env::var(ROLE).ok()?;
    let port: u16 = std::env::var(PORT).unwrap().parse().unwrap();
    Some((role, TcpStream::connect(("127.0.0.1", port)).unwrap()))
}

/// What the child printed after `>` on each line, once it succeeded.
fn output_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed ({:?}): {stdout}",
        out.status
    );
    stdout
        .lines()
        // The harness may have printed "test name ... " on the same line.
        .filter_map(|line| Some(line.split_once('>')?.1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the file behind `handle` holds, read from its start: every
/// duplicate shares one file position, so a plain read would see only what
/// earlier reads through other copies left.
fn read_all(handle: OwnedHandle) -> String {
    use std::os::windows::fs::FileExt;
    let mut buf = [0; 256];
    let n = std::fs::File::from(handle).seek_read(&mut buf, 0).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A file with `text` in it, at a fresh path, open for reading.
fn file_with(text: &str) -> (std::fs::File, std::path::PathBuf) {
    let path = temp_path("file");
    std::fs::write(&path, text).unwrap();
    (std::fs::File::open(&path).unwrap(), path)
}

#[test]
fn a_file_handle_passes_to_another_process() {
    if let Some((_, stream)) = as_child() {
        let text = read_all(recv_handle(&stream).unwrap());
        println!(">{text}");
        return;
    }
    let check = NoLeak::start();
    let (file, path) = file_with("read in the child");
    let (child, stream) = child("a_file_handle_passes_to_another_process", "recv");
    send_handle(&stream, &file).unwrap();
    assert_eq!(output_of(child), "read in the child");
    drop((stream, file));
    std::fs::remove_file(path).unwrap();
    // The child took the duplicate with DUPLICATE_CLOSE_SOURCE.
    check.assert_unchanged();
}

#[test]
fn a_pipe_handle_passes_and_carries_data() {
    if let Some((_, stream)) = as_child() {
        let mut writer = std::fs::File::from(recv_handle(&stream).unwrap());
        writer.write_all(b"through the pipe").unwrap();
        return;
    }
    let check = NoLeak::start();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let (child, stream) = child("a_pipe_handle_passes_and_carries_data", "write");
    send_handle(&stream, &writer).unwrap();
    drop(writer);
    output_of(child);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the pipe");
    drop((reader, stream));
    check.assert_unchanged();
}

#[test]
fn a_socket_passes_with_send_socket() {
    if let Some((_, stream)) = as_child() {
        let mut socket = TcpStream::from(recv_socket(&stream).unwrap());
        socket.write_all(b"from the child").unwrap();
        return;
    }
    let check = NoLeak::start();
    let (mut client, server_side) = pair();
    let (child, stream) = child("a_socket_passes_with_send_socket", "socket");
    send_socket(&stream, &server_side).unwrap();
    drop(server_side);
    output_of(child);
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap();
    assert_eq!(text, "from the child");
    drop((client, stream));
    check.assert_unchanged();
}

#[test]
fn confirmed_mode_passes_and_cleans_up_after_a_receiver_that_leaves() {
    if let Some((role, stream)) = as_child() {
        if role == "fetch" {
            let text = read_all(recv_confirmed(&stream).unwrap());
            println!(">{text}");
        }
        // "leave": exit without reading anything.
        return;
    }
    let test = "confirmed_mode_passes_and_cleans_up_after_a_receiver_that_leaves";
    let check = NoLeak::start();
    let (file, path) = file_with("confirmed");

    let (child_process, stream) = child(test, "fetch");
    send_confirmed(&stream, &file).unwrap();
    assert_eq!(output_of(child_process), "confirmed");
    drop(stream);

    for _ in 0..3 {
        let (child_process, stream) = child(test, "leave");
        let err = send_confirmed(&stream, &file).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{err}"
        );
        assert!(err.to_string().contains("duplicate was closed"), "{err}");
        output_of(child_process);
    }
    drop(file);
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

#[test]
fn batch_of_handles_with_data() {
    let check = NoLeak::start();
    let (a, b) = pair();
    let (file, path) = file_with("batch");
    let (reader, writer) = std::io::pipe().unwrap();
    send_handles(
        &a,
        b"data and three",
        &[file.as_handle(), reader.as_handle(), writer.as_handle()],
    )
    .unwrap();
    let mut data = [0; 64];
    let mut handles: [Option<OwnedHandle>; 3] = Default::default();
    let got = recv_handles(&b, &mut data, &mut handles).unwrap();
    assert!(got.is_complete());
    assert_eq!(&data[..got.bytes], b"data and three");
    assert_eq!(got.fds_received, 3);
    assert!(handles.iter().all(Option::is_some));
    let text = read_all(handles[0].take().unwrap());
    assert_eq!(text, "batch");

    // Too small: the rest of the data is dropped, surplus handles are
    // closed in the sender, and both are reported.
    send_handles(&a, b"longer than four", &[file.as_handle(); 5]).unwrap();
    let mut small = [0; 4];
    let mut two = [None, None];
    let got = recv_handles(&b, &mut small, &mut two).unwrap();
    assert_eq!((got.bytes, got.data_truncated), (4, true));
    assert_eq!((got.fds_received, got.fds_discarded), (2, 3));
    assert_eq!(&small, b"long");

    let too_many = vec![file.as_handle(); MAX_HANDLES + 1];
    let err = send_handles(&a, b"", &too_many).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    drop((handles, two, file, reader, writer, a, b));
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

#[test]
fn handles_go_into_empty_slots_only() {
    let check = NoLeak::start();
    let (a, b) = pair();
    let (file, path) = file_with("slots");
    let (mine, theirs) = (file.try_clone().unwrap(), file.try_clone().unwrap());
    let values = [mine.as_raw_handle(), theirs.as_raw_handle()];
    let mut data = [0; 8];

    // Two empty slots between full ones: two handles are taken, in order,
    // and the third is closed in the sender; the full slots stay as they
    // were.
    let mut slots = [Some(mine.into()), None, Some(theirs.into()), None];
    send_handles(&a, b"", &[file.as_handle(); 3]).unwrap();
    let got = recv_handles(&b, &mut data, &mut slots).unwrap();
    assert_eq!((got.fds_received, got.fds_discarded), (2, 1));
    assert!(!got.is_complete());
    let held = |slot: &Option<OwnedHandle>| {
        slot.as_ref()
            .map(std::os::windows::io::AsRawHandle::as_raw_handle)
    };
    assert_eq!(held(&slots[0]), Some(values[0]));
    assert_eq!(held(&slots[2]), Some(values[1]));
    assert_eq!(read_all(slots[1].take().unwrap()), "slots");
    assert_eq!(read_all(slots[3].take().unwrap()), "slots");

    // No empty slot: every handle is closed in the sender and counted.
    let mut full = [Some(OwnedHandle::from(file.try_clone().unwrap()))];
    send_handles(&a, b"no room", &[file.as_handle(); 2]).unwrap();
    let got = recv_handles(&b, &mut data, &mut full).unwrap();
    assert_eq!(
        (&data[..got.bytes], got.fds_received, got.fds_discarded),
        (&b"no room"[..], 0, 2)
    );
    assert!(full[0].is_some());
    let mut none: [Option<OwnedHandle>; 0] = [];
    send_handles(&a, b"", &[file.as_handle()]).unwrap();
    let got = recv_handles(&b, &mut data, &mut none).unwrap();
    assert_eq!((got.fds_received, got.fds_discarded), (0, 1));

    // A bad value closes the record's handles and leaves the slots alone.
    let me = std::process::id();
    (&a).write_all(&batch_record(me, &[raw_duplicate(&file), 0], b""))
        .unwrap();
    let mut empty: [Option<OwnedHandle>; 2] = Default::default();
    let err = recv_handles(&b, &mut data, &mut empty).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(empty.iter().all(Option::is_none));

    drop((slots, full, file, a, b));
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

/// An `IO::FDPass` record, as a peer might write it.
fn record(pid: u32, value: usize) -> Vec<u8> {
    [&pid.to_ne_bytes()[..], &value.to_ne_bytes()[..]].concat()
}

/// A record of `send_handles`, as a peer might write it.
fn batch_record(pid: u32, values: &[usize], data: &[u8]) -> Vec<u8> {
    let mut record = b"FDPB".to_vec();
    for number in [pid, values.len() as u32, data.len() as u32] {
        record.extend_from_slice(&number.to_ne_bytes());
    }
    for value in values {
        record.extend_from_slice(&(*value as u64).to_ne_bytes());
    }
    record.extend_from_slice(data);
    record
}

/// A duplicate of `file` in this process, made as a peer that is not this
/// library would make it; its value, for a record. The receiver closes it
/// when it takes it.
fn raw_duplicate(file: &std::fs::File) -> usize {
    use std::os::windows::io::IntoRawHandle;
    file.try_clone().unwrap().into_raw_handle() as usize
}

#[test]
fn bad_records_are_rejected_and_nothing_leaks() {
    let check = NoLeak::start();
    let me = std::process::id();
    let cases: [(&str, Vec<u8>, ErrorKind); 6] = [
        ("null handle", record(me, 0), ErrorKind::InvalidData),
        (
            "current-process pseudo-handle",
            record(me, usize::MAX),
            ErrorKind::InvalidData,
        ),
        (
            "current-thread pseudo-handle",
            record(me, usize::MAX - 1),
            ErrorKind::InvalidData,
        ),
        (
            "a value that is no handle",
            record(me, 0x7fff_fff0),
            ErrorKind::InvalidData,
        ),
        (
            "half a record, then the end",
            record(me, 4)[..5].to_vec(),
            ErrorKind::UnexpectedEof,
        ),
        (
            "nothing, then the end",
            Vec::new(),
            ErrorKind::UnexpectedEof,
        ),
    ];
    for (what, bytes, kind) in cases {
        let (mut a, b) = pair();
        a.write_all(&bytes).unwrap();
        drop(a);
        let err = recv_handle(&b).unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
    }

    // A process that does not exist: no pid is 2 more than a multiple of 4.
    let (mut a, b) = pair();
    a.write_all(&record(0x7fff_fffe, 0x40)).unwrap();
    let err = recv_handle(&b).unwrap_err();
    assert!(err.to_string().contains("2147483646"), "{err}");
    // Closed here: the pair below shadows them without closing them, and
    // the count below would see them open.
    drop((a, b));

    // A confirmed-mode receiver told something else answers, and fails.
    let (mut a, b) = pair();
    a.write_all(&record(me, 0x40)).unwrap();
    a.write_all(&[0; 4]).unwrap();
    let err = recv_confirmed(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    let mut answer = [0];
    a.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [1]);

    drop((a, b));
    check.assert_unchanged();
}

/// Gives this process an empty DACL, so that no other process can open it
/// for anything, `PROCESS_DUP_HANDLE` included; handles opened before keep
/// their rights.
fn deny_all_access_to_this_process() {
    use windows_sys::Win32::Security::{
        InitializeAcl, InitializeSecurityDescriptor, SetKernelObjectSecurity,
        SetSecurityDescriptorDacl, ACL, ACL_REVISION, DACL_SECURITY_INFORMATION,
        SECURITY_DESCRIPTOR,
    };
    /// `SECURITY_DESCRIPTOR_REVISION` of `<winnt.h>`.
    const REVISION: u32 = 1;
    let mut acl = std::mem::MaybeUninit::<ACL>::uninit();
    let mut sd = std::mem::MaybeUninit::<SECURITY_DESCRIPTOR>::uninit();
    // SAFETY: each call initialises the buffer it is given, of the size
    // given; the descriptor points at `acl`, which outlives its use.
    unsafe {
        assert_ne!(
            InitializeAcl(acl.as_mut_ptr(), size_of::<ACL>() as u32, ACL_REVISION),
            0
        );
        assert_ne!(
            InitializeSecurityDescriptor(sd.as_mut_ptr().cast(), REVISION),
            0
        );
        assert_ne!(
            SetSecurityDescriptorDacl(sd.as_mut_ptr().cast(), 1, acl.as_ptr(), 0),
            0
        );
        let set = SetKernelObjectSecurity(
            GetCurrentProcess(),
            DACL_SECURITY_INFORMATION,
            sd.as_mut_ptr().cast(),
        );
        assert_ne!(set, 0, "{}", std::io::Error::last_os_error());
    }
}

#[test]
fn a_sender_that_may_not_be_opened_is_permission_denied() {
    if let Some((_, mut stream)) = as_child() {
        deny_all_access_to_this_process();
        let (file, _) = file_with("never read");
        send_handle(&stream, &file).unwrap();
        // Stay until the parent has tried.
        stream.read_exact(&mut [0]).unwrap();
        println!(">done");
        return;
    }
    let check = NoLeak::start();
    let (child_process, mut stream) = child(
        "a_sender_that_may_not_be_opened_is_permission_denied",
        "locked",
    );
    let err = recv_handle(&stream).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("PROCESS_DUP_HANDLE"), "{err}");
    stream.write_all(&[0]).unwrap();
    assert_eq!(output_of(child_process), "done");
    drop(stream);
    check.assert_unchanged();
}

#[test]
fn a_peer_that_claims_another_pid_is_refused() {
    if let Some((_, mut stream)) = as_child() {
        // Told the parent's pid and one of its handle values, the child
        // claims to be the parent.
        let mut told = [0u8; 12];
        stream.read_exact(&mut told).unwrap();
        let (pid, value) = told.split_at(4);
        stream.write_all(&[pid, value].concat()).unwrap();
        stream.write_all(&[b"FDPC", pid, value].concat()).unwrap();
        let mut answer = [0];
        stream.read_exact(&mut answer).unwrap();
        println!(">answer {}", answer[0]);
        return;
    }
    let check = NoLeak::start();
    let (file, path) = file_with("still open");
    let (child_process, mut stream) = child("a_peer_that_claims_another_pid_is_refused", "spoof");
    let me = std::process::id();
    let value = file.as_raw_handle() as usize as u64;
    stream
        .write_all(&[&me.to_ne_bytes()[..], &value.to_ne_bytes()].concat())
        .unwrap();

    // Taken on the peer's word, this would close `file`'s handle.
    let err = recv_handle(&stream).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("names this process"), "{err}");
    // Over TCP on this machine, Windows names the peer: the child.
    let err = recv_confirmed(&stream).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    let child_pid = child_process.id();
    assert!(
        err.to_string()
            .contains(&format!("the socket's peer is process {child_pid}")),
        "{err}"
    );
    assert_eq!(output_of(child_process), "answer 1");
    assert_eq!(read_all(file.try_clone().unwrap().into()), "still open");
    drop((stream, file));
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

#[test]
fn non_blocking_sockets_would_block_and_lose_nothing() {
    let check = NoLeak::start();
    let (mut a, b) = pair();
    b.set_nonblocking(true).unwrap();
    assert_eq!(recv_handle(&b).unwrap_err().kind(), ErrorKind::WouldBlock);

    // Part of a record, the rest later: the receive waits for the rest.
    let (file, path) = file_with("late");
    let dup = {
        let (x, y) = pair();
        send_handle(&x, &file).unwrap();
        let mut whole = [0; 12];
        (&y).read_exact(&mut whole).unwrap();
        whole
    };
    a.write_all(&dup[..3]).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        a.write_all(&dup[3..]).unwrap();
        a
    });
    let text = read_all(recv_handle(&b).unwrap());
    assert_eq!(text, "late");
    let a = writer.join().unwrap();

    // A full socket: WouldBlock before anything is sent, and the duplicate
    // is closed again.
    a.set_nonblocking(true).unwrap();
    let filler = [0u8; 65536];
    loop {
        match (&a).write(&filler) {
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let before = handle_count();
    assert_eq!(
        send_handle(&a, &file).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(handle_count(), before);

    drop((a, b, file));
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

#[test]
fn a_non_blocking_receive_that_meets_a_split_record_gets_it_whole() {
    let check = NoLeak::start();
    let (file, path) = file_with("split");
    let me = std::process::id();
    let (a, b) = pair();
    b.set_nonblocking(true).unwrap();
    let watcher = b.try_clone().unwrap();
    watcher.set_nonblocking(true).unwrap();
    let whole = batch_record(me, &[raw_duplicate(&file)], b"data");
    let (header, rest) = (whole[..16].to_vec(), whole[16..].to_vec());
    (&a).write_all(&header).unwrap();
    while watcher.peek(&mut [0; 16]).ok() != Some(16) {
        std::thread::sleep(Duration::from_millis(1));
    }

    // The rest comes once the receive has taken the header in.
    let writer = std::thread::spawn(move || {
        while watcher.peek(&mut [0]).is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
        (&a).write_all(&rest).unwrap();
        a
    });
    let mut data = [0; 8];
    let mut handles = [None];
    let got = recv_handles(&b, &mut data, &mut handles);
    let a = writer.join().unwrap();
    let got = got.expect("a WouldBlock in the middle of a record loses its header");
    assert_eq!((&data[..got.bytes], got.fds_received), (&b"data"[..], 1));
    assert_eq!(read_all(handles[0].take().unwrap()), "split");

    // The stream is in step: the next record comes whole too.
    (&a).write_all(&batch_record(me, &[], b"next")).unwrap();
    b.set_nonblocking(false).unwrap();
    let got = recv_handles(&b, &mut data, &mut handles).unwrap();
    assert_eq!(&data[..got.bytes], b"next");

    drop((a, b, file));
    std::fs::remove_file(path).unwrap();
    check.assert_unchanged();
}

#[test]
fn received_handles_are_not_inheritable() {
    use windows_sys::Win32::Foundation::{GetHandleInformation, HANDLE_FLAG_INHERIT};
    let _handles = OpensFds::start();
    let (a, b) = pair();
    let (file, path) = file_with("x");
    send_handle(&a, &file).unwrap();
    let got: OwnedHandle = recv_handle(&b).unwrap();
    let mut flags = 0;
    // SAFETY: a live handle and a writable u32.
    assert_ne!(
        unsafe { GetHandleInformation(got.as_raw_handle(), &raw mut flags) },
        0
    );
    assert_eq!(flags & HANDLE_FLAG_INHERIT, 0);
    drop((got, file));
    std::fs::remove_file(path).unwrap();
}

/// The tokio calls, on both runtimes.
#[cfg(feature = "tokio")]
mod with_tokio {
    use super::*;
    use io_fdpass::tokio as fdpass;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Poll;
    use tokio::runtime::{Builder, Runtime};

    /// A runtime of each flavour. The tests drop their runtimes before
    /// the count, and make them after its start: a runtime keeps handles
    /// of its own for a while after the sockets that needed them have gone
    /// (mio's handle to `\Device\Afd`, opened for the first socket
    /// registered, is closed at a later poll of the runtime than the one
    /// that saw its last socket go), and under Wine each of its threads
    /// keeps the Winsock event of its first socket call until it ends.
    /// Dropping a runtime closes the one and joins the others.
    fn runtimes() -> [(&'static str, Runtime); 2] {
        [
            (
                "current-thread",
                Builder::new_current_thread().enable_all().build().unwrap(),
            ),
            (
                "multi-thread",
                Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
        ]
    }

    /// A connected pair of tokio TCP sockets on 127.0.0.1.
    async fn async_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        (a, b)
    }

    fn read(handle: OwnedHandle) -> String {
        read_all(handle)
    }

    #[test]
    fn every_call_works_as_a_future() {
        let (check, (file, path)) = NoLeak::after(|| file_with("async"));
        let runtimes = runtimes();
        for (name, rt) in &runtimes {
            rt.block_on(async {
                let (a, b) = async_pair().await;
                let receiver = tokio::spawn(async move {
                    let one = read(fdpass::recv_handle(&b).await.unwrap());
                    let mut data = [0; 8];
                    let mut handles = [None, None];
                    let got = fdpass::recv_handles(&b, &mut data, &mut handles)
                        .await
                        .unwrap();
                    assert_eq!((&data[..got.bytes], got.fds_received), (&b"two"[..], 2));
                    let confirmed = read(fdpass::recv_confirmed(&b).await.unwrap());
                    let socket = fdpass::recv_socket(&b).await.unwrap();
                    (one, confirmed, socket)
                });
                fdpass::send_handle(&a, &file).await.unwrap();
                fdpass::send_handles(&a, b"two", &[file.as_handle(), file.as_handle()])
                    .await
                    .unwrap();
                fdpass::send_confirmed(&a, &file).await.unwrap();
                let (mut client, server_side) = pair();
                fdpass::send_socket(&a, &server_side).await.unwrap();
                drop(server_side);
                let (one, confirmed, socket) = receiver.await.unwrap();
                assert_eq!(
                    (one.as_str(), confirmed.as_str()),
                    ("async", "async"),
                    "{name}"
                );
                TcpStream::from(socket).write_all(b"passed").unwrap();
                let mut got = [0; 6];
                client.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"passed", "{name}");
            });
        }
        // Gone before the count (`runtimes`).
        drop(runtimes);
        check.assert_unchanged();
        drop(file);
        std::fs::remove_file(path).unwrap();
    }

    /// Counts, on a runtime, the 1 ms sleeps it gets through: the proof
    /// that the runtime runs tasks.
    async fn tick(ticks: Arc<AtomicUsize>) {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until `ticks` has gone 50 past where it is now: another task
    /// ran on while this thread waited. Gives up after 20 s, which a runtime
    /// that some call blocks never gets through: `false`.
    fn other_tasks_run_on(ticks: &AtomicUsize) -> bool {
        let start = ticks.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ticks.load(Ordering::SeqCst) < start + 50 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Runs `receive` on a current-thread runtime against a peer that,
    /// after `prepare`, sends the first part of a record, and the rest only
    /// once another task of the runtime has been seen to run on.
    fn against_a_stalling_peer<F: Future>(
        rt: &Runtime,
        prepare: impl FnOnce(&mut TcpStream) -> (Vec<u8>, Vec<u8>) + Send + 'static,
        receive: impl FnOnce(tokio::net::TcpStream) -> F,
    ) -> F::Output {
        let (a, b) = pair();
        b.set_nonblocking(true).unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let peer = std::thread::spawn({
            let ticks = Arc::clone(&ticks);
            move || {
                let mut a = a;
                let (first, rest) = prepare(&mut a);
                a.write_all(&first).unwrap();
                let ran = other_tasks_run_on(&ticks);
                a.write_all(&rest).unwrap();
                (a, ran)
            }
        });
        let got = rt.block_on(async {
            let heartbeat = tokio::spawn(tick(Arc::clone(&ticks)));
            let got = receive(tokio::net::TcpStream::from_std(b).unwrap()).await;
            heartbeat.abort();
            got
        });
        let (a, ran) = peer.join().unwrap();
        assert!(
            ran,
            "no other task ran while the receive held half a record"
        );
        drop(a);
        got
    }

    /// Reads and drops `n` bytes.
    fn drain(stream: &mut TcpStream, n: usize) {
        let mut sink = vec![0; 65536];
        let mut left = n;
        while left > 0 {
            let piece = left.min(sink.len());
            stream.read_exact(&mut sink[..piece]).unwrap();
            left -= piece;
        }
    }

    /// What `WSADuplicateSocketW` gives process `pid` to open `socket`,
    /// made with a raw call.
    fn protocol_info_for(socket: &TcpStream, pid: u32) -> Vec<u8> {
        use std::os::windows::io::AsRawSocket;
        use windows_sys::Win32::Networking::WinSock::{
            WSADuplicateSocketW, SOCKET, WSAPROTOCOL_INFOW,
        };
        let mut info = std::mem::MaybeUninit::<WSAPROTOCOL_INFOW>::zeroed();
        // SAFETY: a live socket, and room for the record the call fills.
        let result = unsafe {
            WSADuplicateSocketW(socket.as_raw_socket() as SOCKET, pid, info.as_mut_ptr())
        };
        assert_eq!(result, 0, "WSADuplicateSocketW");
        // SAFETY: the record is plain data, all of it written by the call.
        let bytes = unsafe {
            std::slice::from_raw_parts(info.as_ptr().cast::<u8>(), size_of::<WSAPROTOCOL_INFOW>())
        };
        bytes.to_vec()
    }

    #[test]
    fn a_half_sent_record_holds_up_no_other_task() {
        let check = NoLeak::start();
        let (file, path) = file_with("half");
        // Gone before the count (`runtimes`).
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        let me = std::process::id();

        // IO::FDPass's record, cut after its pid.
        let whole = record(me, raw_duplicate(&file));
        let got = against_a_stalling_peer(
            &rt,
            move |_| (whole[..5].to_vec(), whole[5..].to_vec()),
            |b| async move { fdpass::recv_handle(&b).await },
        );
        assert_eq!(read(got.unwrap()), "half");

        // A batch record, cut in its header, its handle values, its data.
        for cut in [10, 20, 30] {
            let whole = batch_record(me, &[raw_duplicate(&file)], b"some data");
            let got = against_a_stalling_peer(
                &rt,
                move |_| (whole[..cut].to_vec(), whole[cut..].to_vec()),
                |b| async move {
                    let mut data = [0; 16];
                    let mut handles = [None];
                    let got = fdpass::recv_handles(&b, &mut data, &mut handles).await?;
                    Ok::<_, std::io::Error>((data[..got.bytes].to_vec(), handles))
                },
            );
            let (data, mut handles) = got.unwrap();
            assert_eq!(data, b"some data", "cut at {cut}");
            assert_eq!(read(handles[0].take().unwrap()), "half");
        }

        // send_socket's reply, cut in its WSAPROTOCOL_INFOW.
        let (mut client, server_side) = pair();
        let got = against_a_stalling_peer(
            &rt,
            move |a| {
                let mut hello = [0; 8];
                a.read_exact(&mut hello).unwrap();
                let pid = u32::from_ne_bytes(hello[4..].try_into().unwrap());
                let reply = [&[0][..], &protocol_info_for(&server_side, pid)].concat();
                (reply[..100].to_vec(), reply[100..].to_vec())
            },
            |b| async move { fdpass::recv_socket(&b).await },
        );
        TcpStream::from(got.unwrap()).write_all(b"passed").unwrap();
        let mut passed = [0; 6];
        client.read_exact(&mut passed).unwrap();
        assert_eq!(&passed, b"passed");

        drop((rt, client, file));
        std::fs::remove_file(path).unwrap();
        check.assert_unchanged();
    }

    #[test]
    fn a_send_into_a_full_socket_holds_up_no_other_task() {
        use std::os::windows::io::{FromRawHandle, RawHandle};
        const DATA: usize = 8 << 20;
        let check = NoLeak::start();
        let (file, path) = file_with("full");
        // Gone before the count (`runtimes`).
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        let (a, mut b) = pair();
        a.set_nonblocking(true).unwrap();
        let mut filled = 0;
        loop {
            match (&a).write(&[0; 65536]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let ticks = Arc::new(AtomicUsize::new(0));
        let receiver = std::thread::spawn({
            let ticks = Arc::clone(&ticks);
            move || {
                drain(&mut b, filled);
                // The record's head and the start of its data; the rest
                // waits in the sender, which must let other tasks run.
                let mut head = [0; 24];
                b.read_exact(&mut head).unwrap();
                drain(&mut b, 1000);
                let ran = other_tasks_run_on(&ticks);
                drain(&mut b, DATA - 1000);
                let value = u64::from_ne_bytes(head[16..].try_into().unwrap());
                // SAFETY: the duplicate the record offers, in this very
                // process: the receiver's to close.
                drop(unsafe { OwnedHandle::from_raw_handle(value as usize as RawHandle) });
                (b, ran)
            }
        });
        let data = vec![7; DATA];
        let sent = rt.block_on(async {
            let heartbeat = tokio::spawn(tick(Arc::clone(&ticks)));
            let a = tokio::net::TcpStream::from_std(a).unwrap();
            let sent = fdpass::send_handles(&a, &data, &[file.as_handle()]).await;
            heartbeat.abort();
            sent
        });
        let (b, ran) = receiver.join().unwrap();
        assert!(ran, "no other task ran while the send waited for room");
        assert_eq!(sent.unwrap(), DATA);

        drop((rt, b, file));
        std::fs::remove_file(path).unwrap();
        check.assert_unchanged();
    }

    /// Polls `future` once, with the task's own waker.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }

    #[test]
    fn a_recv_dropped_while_pending_never_loses_a_handle() {
        const HANDLES: usize = 10;
        let (check, files) = NoLeak::after(|| {
            (0..HANDLES)
                .map(|i| file_with(&i.to_string()))
                .collect::<Vec<_>>()
        });
        let runtimes = runtimes();
        for (name, rt) in &runtimes {
            let (a, b) = pair();
            b.set_nonblocking(true).unwrap();
            rt.block_on(async {
                let b = tokio::net::TcpStream::from_std(b).unwrap();
                for (i, (file, _)) in files.iter().enumerate() {
                    // Each receive is polled once, before anything is sent,
                    // and dropped; only then does the handle go.
                    let mut cancelled = Box::pin(fdpass::recv_handle(&b));
                    assert!(poll_once(&mut cancelled).await.is_pending(), "{name}");
                    drop(cancelled);
                    let mut data = [0; 4];
                    let mut handles = [None];
                    let mut cancelled = Box::pin(fdpass::recv_handles(&b, &mut data, &mut handles));
                    assert!(poll_once(&mut cancelled).await.is_pending(), "{name}");
                    drop(cancelled);
                    assert!(handles[0].is_none());

                    send_handle(&a, file).unwrap();
                    let handle = fdpass::recv_handle(&b).await.unwrap();
                    assert_eq!(read(handle), i.to_string(), "{name}");
                }
            });
            drop(a);
        }
        // Gone before the count (`runtimes`).
        drop(runtimes);
        check.assert_unchanged();
        for (file, path) in files {
            drop(file);
            std::fs::remove_file(path).unwrap();
        }
    }
}
