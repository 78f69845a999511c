//! The Windows records (`record.rs`, pure code that fuzzes on any OS):
//! whatever bytes arrive, in whatever pieces, a record takes exactly its
//! own bytes and no more, reads the same whole or in pieces, and what it
//! accepts writes back to the same bytes; a handle value is accepted only
//! if it can name a real handle; and a record that names the receiving
//! process is let through to touch a handle only when the peer is
//! confirmed to be that process.

#![no_main]

use std::io::ErrorKind;

use io_fdpass::fuzzing::record::{
    batch_values, check_sender, confirmed, hello, parse_answer, parse_confirmed, parse_hello,
    parse_plain, parse_reply, plain, BatchHeader, Data, Fill, HandleValue, Incoming, Kind,
    Outgoing, MAX_HANDLES, MAX_HEAD_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Feeds `stream` to `record` in pieces of the sizes `pieces` gives (1
/// when they run out), as a receive would: the bytes taken, and the
/// verdict once the record is whole, the stream ends or the bytes break
/// the format.
fn feed(record: &mut impl Fill, stream: &[u8], pieces: &[u8]) -> (usize, Result<bool, ErrorKind>) {
    let mut at = 0;
    let mut sizes = pieces.iter().map(|&p| usize::from(p).max(1));
    loop {
        let want = match record.unfilled() {
            Ok(want) => want,
            Err(e) => return (at, Err(e.kind())),
        };
        if want.is_empty() {
            return (at, Ok(true));
        }
        let n = want
            .len()
            .min(sizes.next().unwrap_or(1))
            .min(stream.len() - at);
        if n == 0 {
            return (at, Ok(false));
        }
        want[..n].copy_from_slice(&stream[at..at + n]);
        record.filled(n);
        assert!(record.started());
        at += n;
    }
}

fuzz_target!(|input: &[u8]| {
    // The record's kind, how its bytes come in pieces, which process this
    // is and whether the peer is confirmed to be it; then the bytes.
    let [kind, split, pids, rest @ ..] = input else {
        return;
    };
    let (pieces, stream) = rest.split_at(rest.len().min(usize::from(*split)));
    let own = u32::from(*pids & 0x3f) * 4;
    let peer = match pids >> 6 {
        0 => None,
        1 => Some(own + 4),
        _ => Some(own),
    };
    let kind = match kind % 6 {
        0 => Kind::Plain,
        1 => Kind::Confirmed,
        2 => Kind::Hello,
        3 => Kind::Reply {
            info_len: usize::from(kind / 6),
        },
        4 => Kind::Answer,
        _ => Kind::BatchHead,
    };

    // Whole or in pieces, the same bytes and the same verdict.
    let mut whole = Incoming::<MAX_HEAD_LEN>::new(kind);
    let (took_whole, whole_verdict) = feed(&mut whole, stream, &[255; 64]);
    let mut pieced = Incoming::<MAX_HEAD_LEN>::new(kind);
    let (took, verdict) = feed(&mut pieced, stream, pieces);
    assert_eq!(verdict, whole_verdict, "{kind:?}");
    if verdict == Ok(true) {
        assert_eq!(took, took_whole);
        assert_eq!(pieced.bytes(), whole.bytes());
        // Never past the record: its length is what its bytes say.
        assert_eq!(took, kind.needed(pieced.bytes()).unwrap());
    }
    if verdict != Ok(true) {
        return;
    }
    let record = pieced.bytes();

    match kind {
        Kind::Plain => {
            let offer = parse_plain(record.try_into().unwrap());
            assert_eq!(plain(offer.pid, offer.value as usize), record);
            sender_check(offer.pid, own, peer);
            value_check(offer.value);
        }
        Kind::Confirmed => match parse_confirmed(record.try_into().unwrap()) {
            Ok(offer) => {
                assert_eq!(confirmed(offer.pid, offer.value), record);
                value_check(offer.value);
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidData);
                assert_ne!(&record[..4], b"FDPC");
            }
        },
        Kind::Hello => match parse_hello(record.try_into().unwrap()) {
            Ok(pid) => assert_eq!(hello(pid), record),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidData);
                assert_ne!(&record[..4], b"FDPS");
            }
        },
        Kind::Reply { info_len } => match parse_reply(record, info_len) {
            Ok(info) => {
                assert_eq!(record[0], 0);
                assert_eq!(info, &record[1..]);
                assert_eq!(info.len(), info_len);
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidData);
                assert_ne!(record[0], 0);
            }
        },
        Kind::Answer => assert_eq!(parse_answer([record[0]]).is_ok(), record[0] == 0),
        Kind::BatchHead => batch(record, &stream[took..], pieces, own, peer),
    }
});

/// A batch record whose head is `head`, its data in `data`.
fn batch(head: &[u8], data: &[u8], pieces: &[u8], own: u32, peer: Option<u32>) {
    let header = BatchHeader::parse(head).unwrap().unwrap();
    assert!(header.count <= MAX_HANDLES);
    assert_eq!(header.head_len(), head.len());
    let values: Vec<u64> = batch_values(head).collect();
    assert_eq!(values.len(), header.count);
    let mut written = [0; MAX_HEAD_LEN];
    assert_eq!(header.write(values.iter().copied(), &mut written), head);
    assert_eq!(
        BatchHeader::new(header.pid, header.count, header.data_len).unwrap(),
        header
    );
    if header.count > 0 {
        sender_check(header.pid, own, peer);
    }
    values.iter().for_each(|&v| value_check(v));

    // The data: what fits goes to the buffer, nothing past it, the rest
    // to the sink; no more is taken than the record has.
    let room = usize::from(pieces.first().copied().unwrap_or(0)) % 32;
    let mut buffer = [0xa5u8; 40];
    let mut sink = [0u8; 7];
    let mut body = Data::new(&header, &mut buffer[..room], &mut sink);
    let (took, verdict) = feed(&mut body, data, pieces);
    assert!(took <= header.data_len);
    assert_eq!(verdict, Ok(took == header.data_len));
    assert_eq!(body.kept(), header.data_len.min(room));
    assert_eq!(body.truncated(), header.data_len > room);
    let kept = body.kept();
    assert!(
        buffer[room..].iter().all(|&b| b == 0xa5),
        "written past the buffer"
    );
    let n = kept.min(took);
    assert_eq!(&buffer[..n], &data[..n]);

    // The same record, sent in pieces, is the same bytes.
    let mut outgoing = Outgoing::new([head, &data[..took]]);
    let mut sent = Vec::new();
    let mut sizes = pieces.iter().map(|&p| usize::from(p).max(1)).cycle();
    while !outgoing.is_done() {
        let mut n = 0;
        let piece = sizes.next().unwrap_or(usize::MAX);
        for part in outgoing.rest() {
            let take = (piece - n).min(part.len());
            sent.extend_from_slice(&part[..take]);
            n += take;
        }
        outgoing.sent(n);
    }
    assert_eq!(&sent[..head.len()], head);
    assert_eq!(&sent[head.len()..], &data[..took]);
}

/// The gate before a record's process is opened: a record that names
/// this process passes only when the peer is confirmed to be it, and the
/// peer is asked only then.
fn sender_check(claimed: u32, own: u32, peer: Option<u32>) {
    let mut asked = false;
    let verdict = check_sender(claimed, own, || {
        asked = true;
        peer
    });
    assert_eq!(asked, claimed == own);
    match verdict {
        Ok(()) => assert!(claimed != own || peer == Some(own)),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidData);
            assert!(claimed == own && peer != Some(own));
        }
    }
}

/// A handle value is taken only if it can name a real handle: not null,
/// not a pseudo-handle (-1 to -16).
fn value_check(value: u64) {
    let real = !(-16..=0).contains(&(value as i64));
    match HandleValue::new(value) {
        Ok(v) => {
            assert!(real, "{value:#x}");
            assert_eq!(v.get(), value);
        }
        Err(e) => {
            assert!(!real, "{value:#x}");
            assert_eq!(e.kind(), ErrorKind::InvalidData);
        }
    }
}
