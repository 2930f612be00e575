//! One suite every [`PushMailbox`] must pass (STYLE.md 6), run against the memory mailbox
//! always and against Redis when one answers (two handles there: two replicas).
//!
//! Each check uses its own random till, so checks (and parallel runs sharing a Redis)
//! never see each other's messages. Time is passed in; nothing sleeps.

#![allow(clippy::unwrap_used)]

mod redis;

use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;

use super::{MemoryMailbox, MessageId, PushMailbox, Till};

const T0: u64 = 1_700_000_000_000;
/// Long enough that Redis's own key expiry (real time) never comes during a run.
const TTL: u64 = 600_000;

fn till() -> Till {
    Till::new(
        &format!("shop-{:016x}", fastrand::u64(..)),
        "3",
        &fastrand::u32(..).to_string(),
    )
}

fn body(n: u32) -> Bytes {
    Bytes::from(format!(
        r#"{{"externalCardScan":{{"cardNumber":"6012-{n}","note":"\u00fc"}}}}"#
    ))
}

/// Runs every check; `a` and `b` are two handles on one mailbox (two replicas for Redis).
pub(crate) async fn run<M: PushMailbox>(a: &M, b: &M) {
    messages_come_oldest_first_with_their_bytes(a, b).await;
    a_till_sees_only_its_own_messages(a).await;
    removing_takes_a_message_once(a, b).await;
    expired_messages_are_dropped_and_counted(a).await;
    a_push_wakes_the_calls_held_for_its_till(a, b).await;
    a_sweep_counts_pending_and_drops_expired(a).await;
    every_lists_each_tills_messages_newest_first(a, b).await;
}

async fn messages_come_oldest_first_with_their_bytes<M: PushMailbox>(a: &M, b: &M) {
    let t = till();
    let mut pushed = Vec::new();
    for n in 0..3 {
        pushed.push(
            a.push(&t, body(n), T0 + u64::from(n), T0 + TTL)
                .await
                .unwrap(),
        );
    }
    let pending = b.pending(&t, T0 + 10, 10).await.unwrap();
    assert_eq!(pending.expired, 0);
    assert_eq!(pending.messages, pushed);
    assert_eq!(pending.messages[0].body, body(0));
    assert_eq!(pending.messages[0].queued_ms, T0);
    assert_eq!(pending.messages[0].expires_ms, T0 + TTL);
    let first = b.pending(&t, T0 + 10, 1).await.unwrap();
    assert_eq!(first.messages, pushed[..1]);
}

async fn a_till_sees_only_its_own_messages<M: PushMailbox>(a: &M) {
    let t = till();
    a.push(&t, body(1), T0, T0 + TTL).await.unwrap();
    for other in [
        Till::new(&t.subscription, &t.branch, "other"),
        Till::new(&t.subscription, "other", &t.workplace),
        Till::new("other", &t.branch, &t.workplace),
    ] {
        let pending = a.pending(&other, T0, 10).await.unwrap();
        assert!(pending.messages.is_empty(), "{other:?}");
    }
    assert_eq!(a.pending(&t, T0, 10).await.unwrap().messages.len(), 1);
}

async fn removing_takes_a_message_once<M: PushMailbox>(a: &M, b: &M) {
    let t = till();
    let first = a.push(&t, body(1), T0, T0 + TTL).await.unwrap();
    let second = a.push(&t, body(2), T0 + 1, T0 + TTL).await.unwrap();
    assert!(b.remove(&t, first.id).await.unwrap());
    assert!(!a.remove(&t, first.id).await.unwrap());
    assert!(!a.remove(&t, MessageId::random()).await.unwrap());
    assert_eq!(a.pending(&t, T0, 10).await.unwrap().messages, vec![second]);
}

async fn expired_messages_are_dropped_and_counted<M: PushMailbox>(a: &M) {
    let t = till();
    a.push(&t, body(1), T0, T0 + 1_000).await.unwrap();
    let kept = a.push(&t, body(2), T0, T0 + TTL).await.unwrap();
    let before = a.pending(&t, T0 + 999, 10).await.unwrap();
    assert_eq!((before.messages.len(), before.expired), (2, 0));
    let after = a.pending(&t, T0 + 1_000, 10).await.unwrap();
    assert_eq!(after.expired, 1);
    assert_eq!(after.messages, vec![kept]);
    assert_eq!(a.pending(&t, T0 + 1_000, 10).await.unwrap().expired, 0);
}

async fn a_push_wakes_the_calls_held_for_its_till<M: PushMailbox>(a: &M, b: &M) {
    let t = till();
    let hold = b.wakers().hold(&t.tag());
    let other = b.wakers().hold(&till().tag());
    let (mine, theirs) = (hold.notify.clone(), other.notify.clone());
    let woken = mine.notified();
    let not_woken = theirs.notified();
    tokio::pin!(woken, not_woken);
    woken.as_mut().enable();
    not_woken.as_mut().enable();
    a.push(&t, body(1), T0, T0 + TTL).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the push wakes the till's held call");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), not_woken)
            .await
            .is_err(),
        "another till's call stays asleep"
    );
    assert_eq!(b.wakers().held(), 2);
    drop((hold, other));
    assert_eq!(b.wakers().held(), 0);
    assert_eq!(b.wakers().tills(), 0);
}

async fn a_sweep_counts_pending_and_drops_expired<M: PushMailbox>(a: &M) {
    let t = till();
    a.push(&t, body(1), T0, T0 + 1_000).await.unwrap();
    a.push(&t, body(2), T0, T0 + TTL).await.unwrap();
    let swept = a.sweep(T0 + 2_000).await.unwrap();
    assert!(swept.expired >= 1, "{swept:?}");
    assert!(swept.pending >= 1, "{swept:?}");
    assert_eq!(a.pending(&t, T0 + 2_000, 10).await.unwrap().expired, 0);
}

/// Last: its messages are the newest of the run (other checks queue at `T0` and soon after).
async fn every_lists_each_tills_messages_newest_first<M: PushMailbox>(a: &M, b: &M) {
    let (t, u) = (till(), till());
    let old = a.push(&t, body(1), T0 + 5_000, T0 + TTL).await.unwrap();
    let new = a.push(&u, body(2), T0 + 5_001, T0 + TTL).await.unwrap();
    let newest = a.push(&t, body(3), T0 + 5_002, T0 + TTL).await.unwrap();
    a.push(&u, body(4), T0 + 5_000, T0 + 5_010).await.unwrap();
    let every = b.every(T0 + 5_010, 1000).await.unwrap();
    assert!(every.expired >= 1, "{every:?}");
    let mine: Vec<_> = every
        .messages
        .into_iter()
        .filter(|(till, _)| *till == t || *till == u)
        .collect();
    assert_eq!(
        mine,
        vec![
            (t.clone(), newest.clone()),
            (u.clone(), new),
            (t.clone(), old)
        ]
    );
    assert_eq!(a.pending(&u, T0 + 5_010, 10).await.unwrap().expired, 0);
    let first = b.every(T0 + 5_010, 1).await.unwrap();
    assert_eq!(first.messages, vec![(t, newest)]);
}

#[tokio::test]
async fn memory_mailbox_passes_conformance() {
    let mailbox = MemoryMailbox::new(Gauge::default());
    run(&mailbox, &mailbox).await;
    // Nothing is left of tills whose messages are gone.
    assert_eq!(mailbox.sweep(u64::MAX).await.unwrap().pending, 0);
}
