//! The holder's decisions, with fake fds and no clock.

use std::cell::Cell;

use super::*;

/// An fd of the tests: a number, and what `describe` says of it.
#[derive(Debug, PartialEq, Eq)]
struct Fake(u32);

/// The OS of the tests: processes 1 to 99 are alive, and copies fail
/// while `full` is set.
#[derive(Default)]
struct FakeOs {
    full: Cell<bool>,
}

impl Os for FakeOs {
    type Fd = Fake;

    fn describe(&self, name: &str, fd: &Fake) -> Entry {
        Entry::parse(&format!("{name} kind=fake-{}", fd.0)).unwrap()
    }

    fn duplicate(&self, fd: &Fake) -> io::Result<Fake> {
        if self.full.get() {
            return Err(io::Error::new(
                ErrorKind::QuotaExceeded,
                "too many open files",
            ));
        }
        Ok(Fake(fd.0))
    }

    fn alive(&self, pid: u32) -> bool {
        (1..100).contains(&pid)
    }
}

const NOW: Duration = Duration::from_secs(1_000);

fn holder(max_names: usize) -> Holder<FakeOs> {
    Holder::new(FakeOs::default(), max_names)
}

fn caller() -> Caller {
    Caller::new(1000, Some(7))
}

fn store(h: &mut Holder<FakeOs>, name: &str, fd: u32, lifetime: Lifetime) -> Decision<Fake> {
    let request = Request::Store {
        name: name.to_owned(),
        lifetime,
    };
    h.handle(request, Some(Fake(fd)), caller(), NOW)
}

fn fetch(h: &mut Holder<FakeOs>, names: &[&str], take: bool) -> Decision<Fake> {
    let names = names.iter().map(|&n| n.to_owned()).collect();
    h.handle(Request::Fetch { names, take }, None, caller(), NOW)
}

fn drop_name(h: &mut Holder<FakeOs>, name: &str) -> Decision<Fake> {
    let name = name.to_owned();
    h.handle(Request::Drop { name }, None, caller(), NOW)
}

fn fds(decision: Decision<Fake>) -> Vec<u32> {
    match decision.answer {
        Answer::Ok { fds, .. } => fds.into_iter().map(|fd| fd.0).collect(),
        Answer::Refused(refusal) => panic!("{refusal}"),
    }
}

fn refusal<F: std::fmt::Debug>(decision: Decision<F>) -> (Refusal, Vec<Effect>) {
    match decision.answer {
        Answer::Refused(refusal) => (refusal, decision.effects),
        ok @ Answer::Ok { .. } => panic!("not refused: {ok:?}"),
    }
}

fn names(h: &Holder<FakeOs>) -> Vec<String> {
    h.entries().map(|e| e.name.clone()).collect()
}

#[test]
fn a_store_replaces_what_was_held() {
    let mut h = holder(10);
    let first = store(&mut h, "web", 1, Lifetime::forever());
    assert_eq!(first.answer.text(), "ok\n");
    assert!(first
        .effects
        .contains(&Effect::FdStore { name: "web".into() }));
    assert!(first.effects.contains(&Effect::Record));
    store(&mut h, "web", 2, Lifetime::forever());
    assert_eq!(h.len(), 1);
    assert_eq!(h.fd("web"), Some(&Fake(2)));
    let entry = h.entries().next().unwrap();
    assert_eq!(entry.kind, "fake-2");
    assert_eq!(entry.stored_by_uid, Some(1000));
    assert_eq!(entry.stored_by_pid, Some(7));
    assert_eq!(entry.stored_at, Some(1_000));
    assert_eq!(fds(fetch(&mut h, &["web"], false)), [2]);
}

#[test]
fn the_name_limit_counts_new_names_only() {
    let mut h = holder(2);
    store(&mut h, "a", 1, Lifetime::forever());
    store(&mut h, "b", 2, Lifetime::forever());
    let (refused, effects) = refusal(store(&mut h, "c", 3, Lifetime::forever()));
    assert_eq!(refused.kind, RefusalKind::Full);
    assert!(refused.message.contains("--max-names"), "{refused}");
    assert!(effects.is_empty());
    assert_eq!(names(&h), ["a", "b"]);
    // Replacing a name takes no room.
    assert_eq!(
        store(&mut h, "b", 4, Lifetime::forever()).answer.text(),
        "ok\n"
    );
}

#[test]
fn the_holders_own_names_are_reserved() {
    let mut h = holder(10);
    for name in [SOCKET_NAME, STATE_NAME, HANDOVER_NAME] {
        let (refused, _) = refusal(store(&mut h, name, 1, Lifetime::forever()));
        assert_eq!(refused.kind, RefusalKind::Invalid);
        assert!(
            refused.message.contains("the holder's own name"),
            "{refused}"
        );
        assert!(is_reserved(name));
        let refused = h.adopt(name.to_owned(), Fake(1), None).unwrap_err();
        assert!(refused.message.contains("the holder's own"), "{refused}");
    }
    assert!(!is_reserved("fdpass-hold2"));
    assert!(h.is_empty());
}

#[test]
fn a_store_until_the_exit_of_no_process_is_refused() {
    let mut h = holder(10);
    let (refused, _) = refusal(store(&mut h, "a", 1, Lifetime::forever().until_exit(500)));
    assert_eq!(refused.kind, RefusalKind::NotFound);
    assert!(h.is_empty());
}

#[test]
fn a_fetch_of_a_missing_name_sends_nothing() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever());
    let (refused, effects) = refusal(fetch(&mut h, &["a", "b"], false));
    assert_eq!(refused.kind, RefusalKind::NotFound);
    assert_eq!(refused.line(), "error not-found it holds no fd named b\n");
    assert!(effects.is_empty());
    assert_eq!(fds(fetch(&mut h, &["a", "a"], false)), [1, 1]);
    assert_eq!(names(&h), ["a"]);
}

#[test]
fn a_fetch_that_cannot_copy_is_full() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever());
    h.os().full.set(true);
    let (refused, _) = refusal(fetch(&mut h, &["a"], true));
    assert_eq!(refused.kind, RefusalKind::Full);
    assert_eq!(names(&h), ["a"]);
}

fn reserve(h: &mut Holder<FakeOs>, names: &[&str]) -> Decision<Fake> {
    let names = names.iter().map(|&n| n.to_owned()).collect();
    h.handle(Request::Reserve { names }, None, caller(), NOW)
}

/// The fds of a take's answer, and its reservation.
fn taken(decision: Decision<Fake>) -> (Vec<u32>, Reservation) {
    let reservation = decision.reservation.expect("a take reserves");
    (
        fds(Decision {
            reservation: None,
            ..decision
        }),
        reservation,
    )
}

#[test]
fn a_take_is_all_or_nothing() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever());
    store(&mut h, "b", 2, Lifetime::forever());
    let missing = reserve(&mut h, &["a", "c"]);
    assert!(missing.reservation.is_none());
    let (refused, effects) = refusal(missing);
    assert_eq!(refused.kind, RefusalKind::NotFound);
    assert!(effects.is_empty());
    assert_eq!(names(&h), ["a", "b"]);

    // A take sends the fds but removes nothing until it is committed.
    let took = reserve(&mut h, &["b", "a"]);
    assert!(!took.effects.contains(&Effect::Record));
    let (fds, reservation) = taken(took);
    assert_eq!(fds, [2, 1]);
    assert!(reservation.awaits_commit());
    assert_eq!(names(&h), ["a", "b"]);
    let effects = h.commit(reservation);
    assert!(h.is_empty());
    let records = effects.iter().filter(|e| **e == Effect::Record).count();
    assert_eq!(records, 1, "{effects:?}");
    for name in ["a", "b"] {
        assert!(effects.contains(&Effect::FdStore { name: name.into() }));
    }
}

#[test]
fn a_take_not_committed_leaves_the_names_held() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever().until_exit(5));
    store(&mut h, "b", 2, Lifetime::forever());
    let (_, reservation) = taken(reserve(&mut h, &["a", "b"]));
    // Reserved, the names are listed and fetched, but not taken again.
    assert_eq!(names(&h), ["a", "b"]);
    assert_eq!(fds(fetch(&mut h, &["a"], false)), [1]);
    let (refused, _) = refusal(reserve(&mut h, &["b"]));
    assert_eq!(refused.kind, RefusalKind::NotFound);
    assert!(refused.message.contains("another client"), "{refused}");
    let effects = h.abort(reservation);
    assert!(!effects.contains(&Effect::Record), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Unwatch { .. })));
    assert_eq!(names(&h), ["a", "b"]);
    assert_eq!(h.watches().len(), 1);
    // Held as before: taken again, by another client.
    let (fds, reservation) = taken(reserve(&mut h, &["b"]));
    assert_eq!(fds, [2]);
    h.commit(reservation);
    assert_eq!(names(&h), ["a"]);
}

#[test]
fn a_take_commits_only_what_it_still_reserves() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever());
    store(&mut h, "b", 2, Lifetime::forever());
    let (_, reservation) = taken(reserve(&mut h, &["a", "b"]));
    // Stored again and dropped meanwhile: the new fd is not the one sent.
    store(&mut h, "a", 3, Lifetime::forever());
    assert_eq!(drop_name(&mut h, "b").answer.text(), "ok\n");
    h.commit(reservation);
    assert_eq!(names(&h), ["a"]);
    assert_eq!(h.fd("a"), Some(&Fake(3)));
}

#[test]
fn an_old_clients_take_awaits_no_commit() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever());
    let (fds, reservation) = taken(fetch(&mut h, &["a"], true));
    assert_eq!(fds, [1]);
    assert!(!reservation.awaits_commit());
    assert_eq!(names(&h), ["a"]);
    h.commit(reservation);
    assert!(h.is_empty());
    // A fetch reserves nothing.
    store(&mut h, "a", 1, Lifetime::forever());
    assert!(fetch(&mut h, &["a"], false).reservation.is_none());
}

#[test]
fn a_drop_closes_and_forgets() {
    let mut h = holder(10);
    store(&mut h, "a", 1, Lifetime::forever().until_exit(5));
    let dropped = drop_name(&mut h, "a");
    assert_eq!(dropped.answer.text(), "ok\n");
    assert!(dropped
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Unwatch { .. })));
    assert!(dropped
        .effects
        .contains(&Effect::FdStore { name: "a".into() }));
    assert!(h.is_empty());
    let (refused, _) = refusal(drop_name(&mut h, "a"));
    assert_eq!(refused.kind, RefusalKind::NotFound);
}

#[test]
fn list_says_what_is_held_in_order() {
    let mut h = holder(10);
    store(&mut h, "b", 2, Lifetime::forever());
    store(
        &mut h,
        "a",
        1,
        Lifetime::forever().ttl(Duration::from_millis(1500)),
    );
    let list = h.handle(Request::List, None, caller(), NOW);
    let text = list.answer.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok");
    let a = Entry::parse(lines[1]).unwrap();
    assert_eq!((a.name.as_str(), a.expires_at), ("a", Some(1_002)));
    assert_eq!(Entry::parse(lines[2]).unwrap().name, "b");
    assert_eq!(lines.len(), 3);
}

#[test]
fn a_fresh_ttl_is_listed_as_what_was_asked() {
    for ttl in [1, 4, 600, 86_400] {
        let ttl = Duration::from_secs(ttl);
        for into_second in [0, 1, 300, 999] {
            let mut h = holder(10);
            let at = NOW + Duration::from_millis(into_second);
            let lifetime = Lifetime::forever().ttl(ttl);
            let request = Request::Store {
                name: "a".to_owned(),
                lifetime,
            };
            h.handle(request, Some(Fake(1)), caller(), at);
            let entry = h.entries().next().unwrap().clone();
            // Listed in the second it was stored: what was asked (a store
            // on the very start of a second has less the moment after).
            assert_eq!(entry.expires_in(at), Some(ttl));
            if into_second > 0 {
                let same_second = NOW + Duration::from_millis(999);
                assert_eq!(entry.expires_in(same_second), Some(ttl), "{into_second}");
            }
            // Later: never more than what was asked, less than a second
            // short of what is truly left, and down to zero.
            for later in [1, 500, 1000, 1001] {
                let later = Duration::from_millis(later);
                let left = entry.expires_in(at + later).unwrap();
                assert!(left <= ttl, "{left:?} {later:?}");
                assert!(left + later + Duration::from_secs(1) > ttl, "{left:?}");
            }
            assert_eq!(entry.expires_in(at + ttl + ttl), Some(Duration::ZERO));
        }
    }
    assert_eq!(Entry::parse("a kind=x").unwrap().expires_in(NOW), None);
}

#[test]
fn a_ttl_expires_at_its_time_and_not_before() {
    let mut h = holder(10);
    let stored = store(
        &mut h,
        "a",
        1,
        Lifetime::forever().ttl(Duration::from_secs(60)),
    );
    let at = NOW + Duration::from_secs(60);
    assert!(stored.effects.contains(&Effect::Expiry(Some(at))));
    store(&mut h, "b", 2, Lifetime::forever());
    assert_eq!(h.next_expiry(), Some(at));

    let early = h.expire(NOW + Duration::from_millis(59_999));
    assert_eq!(early, [Effect::Expiry(Some(at))]);
    assert_eq!(names(&h), ["a", "b"]);

    let due = h.expire(at);
    assert!(due.contains(&Effect::FdStore { name: "a".into() }));
    assert!(due.contains(&Effect::Record));
    assert_eq!(due.last(), Some(&Effect::Expiry(None)));
    assert_eq!(names(&h), ["b"]);
}

#[test]
fn a_replaced_names_old_lifetime_leaves_the_new_fd() {
    let mut h = holder(10);
    let first = store(
        &mut h,
        "a",
        1,
        Lifetime::forever()
            .until_exit(5)
            .ttl(Duration::from_secs(1)),
    );
    let Some(&Effect::Watch { id: old, pid: 5 }) = first
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Watch { .. }))
    else {
        panic!("{:?}", first.effects);
    };
    let second = store(&mut h, "a", 2, Lifetime::forever());
    assert!(second.effects.contains(&Effect::Unwatch { id: old }));
    assert_eq!(h.next_expiry(), None);
    // The old watch ends, and the old time comes: the new fd stays.
    assert!(h.exited(old).is_empty());
    h.expire(NOW + Duration::from_secs(2));
    assert_eq!(h.fd("a"), Some(&Fake(2)));
}

#[test]
fn an_exit_drops_what_was_kept_until_then() {
    let mut h = holder(10);
    let stored = store(&mut h, "a", 1, Lifetime::forever().until_exit(5));
    let watches = h.watches();
    assert_eq!(watches.len(), 1);
    assert!(stored.effects.contains(&watches[0]));
    let Effect::Watch { id, .. } = watches[0] else {
        panic!("{watches:?}");
    };
    let effects = h.exited(id);
    assert!(effects.contains(&Effect::Log("dropped a: process 5 exited".into())));
    assert!(h.is_empty());
}

#[test]
fn adopted_fds_keep_their_record() {
    let mut h = holder(1);
    let recorded = Entry::parse("x kind=tcp expires=2000 until-exit=9").unwrap();
    let effects = h.adopt("web".into(), Fake(1), Some(recorded)).unwrap();
    assert!(effects.contains(&Effect::Watch { id: 0, pid: 9 }));
    assert_eq!(h.next_expiry(), Some(Duration::from_secs(2_000)));
    assert_eq!(h.entries().next().unwrap().name, "web");
    // The limit is for stores; a repeated or bad name is refused.
    h.adopt("other".into(), Fake(2), None).unwrap();
    let other = h.entries().find(|e| e.name == "other").unwrap();
    assert_eq!(other.kind, "fake-2");
    let repeated = h.adopt("web".into(), Fake(3), None).unwrap_err();
    assert!(repeated.message.contains("given twice"), "{repeated}");
    let bad = h.adopt("a:b".into(), Fake(3), None).unwrap_err();
    assert!(bad.message.contains("contains ':'"), "{bad}");
    let all = h.take_all();
    assert_eq!(all.len(), 2);
    assert!(h.is_empty());
}

#[test]
fn an_fd_with_anything_but_a_store_is_refused() {
    let mut h = holder(10);
    let (refused, _) = refusal(h.handle(Request::List, Some(Fake(1)), caller(), NOW));
    assert_eq!(refused.kind, RefusalKind::Invalid);
    let store = Request::Store {
        name: "a".into(),
        lifetime: Lifetime::forever(),
    };
    let (refused, _) = refusal(h.handle(store, None, caller(), NOW));
    assert_eq!(refused.kind, RefusalKind::Invalid);
}
