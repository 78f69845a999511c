//! The tokio API on both runtimes: many connections at once, mixing with the
//! blocking API, a peer that leaves, and cancellation at every point.
#![cfg(all(unix, feature = "tokio"))]

mod util;

use std::future::Future;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::Once;
use std::task::Poll;

use io_fdpass::tokio::{recv_fd, recv_fds, recv_many, send_fd, send_fds, send_many};
use io_fdpass::MAX_BURST;
use tokio::net::{UnixDatagram, UnixStream};
use tokio::runtime::{Builder, Runtime};
use util::{file_with, read_all, NoLeak};

/// Each runtime in turn, made only when its turn comes, so that the fds of
/// one are not counted in the test of the other.
fn runtimes() -> impl Iterator<Item = (&'static str, Runtime)> {
    ["current-thread", "multi-thread"].into_iter().map(|name| {
        let mut builder = if name == "current-thread" {
            Builder::new_current_thread()
        } else {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(2);
            b
        };
        (name, builder.enable_all().build().unwrap())
    })
}

/// Starts a leak check. The first runtime of the process opens fds that
/// stay open for good (the signal driver's, since the handoff example turns
/// on tokio's `signal` feature for every test), so one is made before the
/// first count.
fn start() -> NoLeak {
    static WARM: Once = Once::new();
    WARM.call_once(|| drop(Builder::new_current_thread().enable_all().build().unwrap()));
    NoLeak::start()
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[test]
fn hundred_connections_each_pass_a_thousand_fds() {
    const CONNECTIONS: usize = 100;
    const FDS: usize = 1_000;
    let check = start();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let file = std::sync::Arc::new(file_with(name));
            let mut tasks = Vec::new();
            for c in 0..CONNECTIONS {
                let (a, b) = UnixStream::pair().unwrap();
                let file = file.clone();
                tasks.push(tokio::spawn(assert_send(async move {
                    for i in 0..FDS {
                        if (c + i) % 2 == 0 {
                            send_fd(&a, &*file).await.unwrap();
                        } else {
                            send_fds(&a, &[0], &[file.as_fd()]).await.unwrap();
                        }
                    }
                })));
                tasks.push(tokio::spawn(assert_send(async move {
                    let mut fds = [None];
                    for i in 0..FDS {
                        if i % 3 == 0 {
                            let got = recv_fds(&b, &mut [0], &mut fds).await.unwrap();
                            assert_eq!(got.fds_received, 1);
                            drop(fds[0].take());
                        } else {
                            drop(recv_fd(&b).await.unwrap());
                        }
                    }
                })));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn async_and_blocking_ends_talk_both_ways() {
    let check = start();
    for (name, rt) in runtimes() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let blocking = std::thread::spawn(move || {
            // Receive with the blocking API, then send back.
            let fd = io_fdpass::recv_fd(&b).unwrap();
            io_fdpass::send_fd(&b, &fd).unwrap();
        });
        rt.block_on(async {
            a.set_nonblocking(true).unwrap();
            let a = UnixStream::from_std(a).unwrap();
            send_fd(&a, file_with(name)).await.unwrap();
            assert_eq!(read_all(recv_fd(&a).await.unwrap()), name);
        });
        blocking.join().unwrap();
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn a_peer_that_closes_midway_is_unexpected_eof() {
    let check = start();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let sender = tokio::spawn(async move {
                for _ in 0..10 {
                    send_fd(&a, file_with(name)).await.unwrap();
                }
                // `a` is dropped here, midway through what the receiver wants.
            });
            let mut got = 0;
            let err = loop {
                match recv_fd(&b).await {
                    Ok(fd) => {
                        assert_eq!(read_all(fd), name);
                        got += 1;
                    }
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{name}: {err}");
            assert_eq!(got, 10);
            sender.await.unwrap();

            let (a, b) = UnixStream::pair().unwrap();
            drop(b);
            let err = send_fd(&a, &a).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        });
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn datagram_sockets_work_the_same() {
    let check = start();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let (a, b) = UnixDatagram::pair().unwrap();
            let file = file_with(name);
            send_fd(&a, &file).await.unwrap();
            assert_eq!(read_all(recv_fd(&b).await.unwrap()), name);
            send_fds(&a, b"0123456789", &[file.as_fd(); 3])
                .await
                .unwrap();
            let mut data = [0; 4];
            let mut fds = [None, None];
            let got = recv_fds(&b, &mut data, &mut fds).await.unwrap();
            assert!(got.data_truncated);
            assert_eq!((got.fds_received, got.fds_discarded), (2, 1));
        });
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn a_recv_cancelled_by_a_timeout_never_loses_an_fd() {
    const FDS: usize = 200;
    let check = start();
    for (name, rt) in runtimes() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (go, wait_for_go) = std::sync::mpsc::channel();
        let trickle = std::thread::spawn(move || {
            for i in 0..FDS {
                // Now and then only once a receive has been dropped while
                // pending, so that some certainly are.
                if i % 5 == 0 && wait_for_go.recv().is_err() {
                    return;
                }
                io_fdpass::send_fd(&a, file_with(&i.to_string())).unwrap();
            }
        });
        let cancelled = rt.block_on(async {
            b.set_nonblocking(true).unwrap();
            let b = UnixStream::from_std(b).unwrap();
            let (mut next, mut cancelled) = (0, 0);
            while next < FDS {
                if let Some(fd) = poll_or_drop(recv_fd(&b)).await {
                    assert_eq!(read_all(fd.unwrap()), next.to_string(), "{name}");
                    next += 1;
                } else {
                    cancelled += 1;
                    let _ = go.send(());
                    b.readable().await.unwrap();
                }
            }
            cancelled
        });
        trickle.join().unwrap();
        assert!(cancelled > 0, "{name}: no receive was ever cancelled");
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn bursts_arrive_in_order_through_cancelled_receives() {
    const FDS: usize = 1_000;
    let check = start();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let files: Vec<_> = (0..10).map(|i| file_with(&i.to_string())).collect();
            let (go, mut wait_for_go) = tokio::sync::mpsc::unbounded_channel();
            let sender = tokio::spawn(async move {
                let fds: Vec<_> = (0..FDS).map(|i| files[i % 10].as_fd()).collect();
                let mut sent = 0;
                while sent < FDS {
                    // Short bursts, each once a receive has been dropped
                    // while pending, so that some certainly are.
                    if wait_for_go.recv().await.is_none() {
                        break;
                    }
                    let end = FDS.min(sent + 37);
                    sent += send_many(&a, &fds[sent..end]).await.unwrap();
                }
            });
            let mut fds = [const { None }; MAX_BURST];
            let (mut next, mut cancelled) = (0, 0);
            while next < FDS {
                if let Some(got) = poll_or_drop(recv_many(&b, &mut fds)).await {
                    let got = got.unwrap();
                    assert_eq!(got.rejected, 0, "{name}");
                    let before = next;
                    for fd in fds.iter_mut().filter_map(Option::take) {
                        assert_eq!(read_all(fd), (next % 10).to_string(), "{name}");
                        next += 1;
                    }
                    assert_eq!(got.fds_received, next - before, "{name}");
                } else {
                    cancelled += 1;
                    let _ = go.send(());
                    b.readable().await.unwrap();
                }
            }
            sender.await.unwrap();
            assert!(cancelled > 0, "{name}: no receive was ever cancelled");
            let err = recv_many(&b, &mut fds).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{name}");
        });
        drop(rt);
        check.assert_unchanged();
    }
}

/// Polls `fut` once, returning whether it completed.
async fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Polls `fut` once: its output if it is ready, or `None` once it has been
/// dropped while pending, which cancels it.
async fn poll_or_drop<F: Future>(fut: F) -> Option<F::Output> {
    match poll_once(pin!(fut)).await {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[test]
fn a_recv_dropped_unpolled_pending_or_woken_loses_nothing() {
    let check = start();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();

            // Never polled.
            drop(recv_fd(&b));
            // Polled while nothing was there, then dropped.
            {
                let mut pending = pin!(recv_fd(&b));
                assert!(poll_once(pending.as_mut()).await.is_pending());
            }
            // Polled, woken by an arrival, dropped without being polled again.
            let mut fds = [None, None];
            let mut data = [0; 4];
            {
                let mut woken = pin!(recv_fds(&b, &mut data, &mut fds));
                assert!(poll_once(woken.as_mut()).await.is_pending());
                send_fds(&a, b"\0", &[file_with(name).as_fd()])
                    .await
                    .unwrap();
                b.readable().await.unwrap();
            }
            assert!(fds.iter().all(Option::is_none));
            assert_eq!(read_all(recv_fd(&b).await.unwrap()), name);
        });
        drop(rt);
        check.assert_unchanged();
    }
}

#[test]
fn futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let check = start();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let rt = Builder::new_current_thread().enable_all().build().unwrap();
    let guard = rt.enter();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (a, b) = (
        UnixStream::from_std(a).unwrap(),
        UnixStream::from_std(b).unwrap(),
    );
    let fd: OwnedFd = file_with("x").into();
    let mut fds = [None];
    is_send(&send_fd(&a, &fd));
    is_send(&recv_fd(&b));
    is_send(&send_fds(&a, b"x", &[fd.as_fd()]));
    is_send(&recv_fds(&b, &mut [0], &mut fds));
    drop((a, b, fd, guard));
    drop(rt);
    check.assert_unchanged();
}
