//! Queueing and claiming: idempotence, order, leases, concurrency, results.

use std::collections::HashSet;

use super::{new, LEASE, T0};
use crate::outbox::{Failure, Outbox, Status};

pub(super) async fn enqueue_is_idempotent_per_conversation_and_upstream<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let d = new(up, T0);
    assert!(
        outbox.enqueue(d.clone()).await.unwrap(),
        "first time queued"
    );
    assert!(
        !outbox.enqueue(d.clone()).await.unwrap(),
        "a duplicate queues nothing"
    );
    let other = crate::outbox::NewDelivery {
        upstream: format!("{up}-other"),
        ..d.clone()
    };
    assert!(
        outbox.enqueue(other).await.unwrap(),
        "another upstream is another delivery"
    );
    let got = outbox.get(up, d.id()).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.attempts, got.queued_ms, got.next_ms),
        (Status::Pending, 0, T0, T0)
    );
    assert_eq!(
        (got.key, &got.body, &got.event[..]),
        (d.key, &d.body, "completeSession")
    );
    assert_eq!(outbox.counts(up).await.unwrap().pending, 1);
    // A dead one is still there: queued again, nothing.
    let claimed = outbox.claim(up, T0, LEASE, 10).await.unwrap();
    let dead = Failure::Dead {
        error: "answered 422".into(),
    };
    outbox.failed(up, claimed[0].id, dead).await.unwrap();
    assert!(!outbox.enqueue(d).await.unwrap());
}

pub(super) async fn due_deliveries_are_claimed_oldest_first_up_to_the_limit<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let a = new(up, T0 + 2);
    let b = new(up, T0 + 1);
    let later = new(up, T0 + 60_000);
    for d in [&a, &b, &later] {
        outbox.enqueue(d.clone()).await.unwrap();
    }
    assert!(
        outbox.claim(up, T0, LEASE, 10).await.unwrap().is_empty(),
        "none due yet"
    );
    let first = outbox.claim(up, T0 + 10, LEASE, 1).await.unwrap();
    assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), [b.id()]);
    let rest = outbox.claim(up, T0 + 10, LEASE, 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|d| d.id).collect::<Vec<_>>(),
        [a.id()],
        "not the later one"
    );
    assert!(outbox
        .claim(up, T0 + 10, LEASE, 0)
        .await
        .unwrap()
        .is_empty());
}

pub(super) async fn a_claim_hides_a_delivery_until_its_lease_ends<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let d = new(up, T0);
    outbox.enqueue(d.clone()).await.unwrap();
    assert_eq!(outbox.claim(up, T0, LEASE, 10).await.unwrap().len(), 1);
    assert!(outbox
        .claim(up, T0 + LEASE - 1, LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    // The claimer died without a word: after the lease someone else gets it.
    let again = outbox.claim(up, T0 + LEASE, LEASE, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [d.id()]);
    assert_eq!(again[0].attempts, 0, "a claim is no attempt");
}

pub(super) async fn concurrent_claimers_never_get_the_same_delivery<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    for _ in 0..40 {
        outbox.enqueue(new(up, T0)).await.unwrap();
    }
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let (o, up) = (outbox.clone(), up.to_owned());
            tokio::spawn(async move { o.claim(&up, T0, LEASE, 7).await.unwrap() })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claimers {
        for d in c.await.unwrap() {
            assert!(seen.insert(d.id), "claimed twice: {}", d.id);
        }
    }
    assert_eq!(seen.len(), 40);
}

pub(super) async fn delivered_is_gone_and_not_queued_again_by_its_id<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let d = new(up, T0);
    outbox.enqueue(d.clone()).await.unwrap();
    let claimed = outbox.claim(up, T0, LEASE, 1).await.unwrap();
    outbox.delivered(up, claimed[0].id).await.unwrap();
    assert!(outbox.get(up, d.id()).await.unwrap().is_none());
    assert_eq!(
        outbox.counts(up).await.unwrap(),
        crate::outbox::Counts::default()
    );
    assert!(outbox
        .claim(up, T0 + 10 * LEASE, LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(outbox.next_due(up).await.unwrap(), None);
}

pub(super) async fn a_failure_counts_the_attempt_and_schedules_or_kills<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let d = new(up, T0);
    outbox.enqueue(d.clone()).await.unwrap();
    let id = outbox.claim(up, T0, LEASE, 1).await.unwrap()[0].id;
    let retry = Failure::Retry {
        next_ms: T0 + 5_000,
        error: "answered 503".into(),
    };
    outbox.failed(up, id, retry).await.unwrap();
    let got = outbox.get(up, id).await.unwrap().unwrap();
    assert_eq!((got.attempts, got.next_ms), (1, T0 + 5_000));
    assert_eq!(got.last_error.as_deref(), Some("answered 503"));
    assert!(outbox
        .claim(up, T0 + 4_999, LEASE, 1)
        .await
        .unwrap()
        .is_empty());
    let id = outbox.claim(up, T0 + 5_000, LEASE, 1).await.unwrap()[0].id;
    let dead = Failure::Dead {
        error: "answered 422".into(),
    };
    outbox.failed(up, id, dead).await.unwrap();
    let got = outbox.get(up, id).await.unwrap().unwrap();
    assert_eq!((got.status, got.attempts), (Status::Dead, 2));
    assert_eq!(got.last_error.as_deref(), Some("answered 422"));
    assert!(
        outbox
            .claim(up, u64::MAX / 2, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "dead is never due"
    );
    let counts = outbox.counts(up).await.unwrap();
    assert_eq!(
        (counts.pending, counts.dead, counts.oldest_queued_ms),
        (0, 1, None)
    );
}

pub(super) async fn next_due_follows_schedule_and_claims<O: Outbox + Clone>(outbox: &O, up: &str) {
    assert_eq!(outbox.next_due(up).await.unwrap(), None);
    let (a, b) = (new(up, T0 + 100), new(up, T0 + 200));
    outbox.enqueue(a.clone()).await.unwrap();
    outbox.enqueue(b).await.unwrap();
    assert_eq!(outbox.next_due(up).await.unwrap(), Some(T0 + 100));
    outbox.claim(up, T0 + 100, LEASE, 1).await.unwrap();
    assert_eq!(
        outbox.next_due(up).await.unwrap(),
        Some(T0 + 200),
        "the claimed one is not due"
    );
    outbox.claim(up, T0 + 200, LEASE, 1).await.unwrap();
    assert_eq!(
        outbox.next_due(up).await.unwrap(),
        Some(T0 + 100 + LEASE),
        "with both claimed, the first claim's end"
    );
}

pub(super) async fn a_released_claim_is_due_at_once<O: Outbox + Clone>(outbox: &O, up: &str) {
    let d = new(up, T0);
    outbox.enqueue(d.clone()).await.unwrap();
    outbox.claim(up, T0, LEASE, 1).await.unwrap();
    outbox.release(up, d.id()).await.unwrap();
    let now = crate::conversation::Clock::system().now_ms();
    let again = outbox.claim(up, now, LEASE, 1).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "claimable again before the lease would have ended"
    );
    assert_eq!(again[0].attempts, 0);
}

pub(super) async fn concurrent_enqueues_all_arrive<O: Outbox + Clone>(outbox: &O, up: &str) {
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (o, d) = (outbox.clone(), new(up, T0));
            tokio::spawn(async move { o.enqueue(d).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(outbox.counts(up).await.unwrap().pending, 64);
    assert_eq!(outbox.claim(up, T0, LEASE, 100).await.unwrap().len(), 64);
}
