//! What an operator does through the admin API: list, count, retry, delete.

use super::{new, LEASE, T0};
use crate::outbox::{DeliveryId, Failure, Outbox, Status};

async fn dead_one<O: Outbox + Clone>(outbox: &O, up: &str, queued: u64) -> DeliveryId {
    let d = new(up, queued);
    outbox.enqueue(d.clone()).await.unwrap();
    let claimed = outbox.claim(up, queued, LEASE, 100).await.unwrap();
    let id = claimed.iter().find(|c| c.id == d.id()).unwrap().id;
    outbox
        .failed(
            up,
            id,
            Failure::Dead {
                error: "answered 400".into(),
            },
        )
        .await
        .unwrap();
    id
}

pub(super) async fn retry_of_a_dead_delivery_starts_afresh<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let id = dead_one(outbox, up, T0).await;
    let now = T0 + 86_400_000;
    assert!(outbox.retry(up, id, now).await.unwrap());
    let got = outbox.get(up, id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.status,
            got.attempts,
            got.queued_ms,
            got.next_ms,
            got.last_error
        ),
        (Status::Pending, 0, now, now, None)
    );
    assert_eq!(outbox.claim(up, now, LEASE, 10).await.unwrap().len(), 1);
    // A pending one is made due now, its attempts kept.
    let retry = Failure::Retry {
        next_ms: now + 60_000,
        error: "answered 500".into(),
    };
    outbox.failed(up, id, retry).await.unwrap();
    assert!(outbox.retry(up, id, now + 1).await.unwrap());
    let got = outbox.get(up, id).await.unwrap().unwrap();
    assert_eq!(
        (got.attempts, got.next_ms, got.queued_ms),
        (1, now + 1, now)
    );
    assert!(!outbox
        .retry(up, DeliveryId::from_bytes([7; 16]), now)
        .await
        .unwrap());
}

pub(super) async fn retry_dead_revives_every_dead_one_of_the_upstream<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let ids = [
        dead_one(outbox, up, T0).await,
        dead_one(outbox, up, T0 + 1).await,
    ];
    let elsewhere = format!("{up}-elsewhere");
    let other = dead_one(outbox, &elsewhere, T0).await;
    outbox.enqueue(new(up, T0)).await.unwrap();
    assert_eq!(outbox.retry_dead(up, T0 + 5).await.unwrap(), 2);
    for id in ids {
        let got = outbox.get(up, id).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.attempts, got.queued_ms),
            (Status::Pending, 0, T0 + 5)
        );
    }
    assert_eq!(outbox.counts(up).await.unwrap().dead, 0);
    assert_eq!(outbox.counts(up).await.unwrap().pending, 3);
    let untouched = outbox.get(&elsewhere, other).await.unwrap().unwrap();
    assert_eq!(
        untouched.status,
        Status::Dead,
        "only the upstream asked for"
    );
    assert_eq!(outbox.retry_dead(up, T0 + 6).await.unwrap(), 0);
}

pub(super) async fn delete_forgets_and_unknown_ids_are_false<O: Outbox + Clone>(
    outbox: &O,
    up: &str,
) {
    let dead = dead_one(outbox, up, T0).await;
    let pending = new(up, T0);
    outbox.enqueue(pending.clone()).await.unwrap();
    assert!(outbox.delete(up, dead).await.unwrap());
    assert!(outbox.delete(up, pending.id()).await.unwrap());
    assert!(!outbox.delete(up, pending.id()).await.unwrap());
    assert!(outbox.get(up, dead).await.unwrap().is_none());
    assert_eq!(
        outbox.counts(up).await.unwrap(),
        crate::outbox::Counts::default()
    );
    // Deleted, it can be queued again (a new call of that conversation would).
    assert!(outbox.enqueue(pending).await.unwrap());
}

pub(super) async fn lists_and_counts_see_pending_and_dead<O: Outbox + Clone>(outbox: &O, up: &str) {
    let dead = dead_one(outbox, up, T0 + 5).await;
    let (a, b) = (new(up, T0 + 2), new(up, T0 + 1));
    outbox.enqueue(a.clone()).await.unwrap();
    outbox.enqueue(b.clone()).await.unwrap();
    let pending = outbox.list(up, Status::Pending, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|d| d.id).collect::<Vec<_>>(),
        [b.id(), a.id()]
    );
    assert_eq!(outbox.list(up, Status::Pending, 1).await.unwrap().len(), 1);
    let dead_list = outbox.list(up, Status::Dead, 10).await.unwrap();
    assert_eq!(dead_list.iter().map(|d| d.id).collect::<Vec<_>>(), [dead]);
    assert_eq!(dead_list[0].last_error.as_deref(), Some("answered 400"));
    let counts = outbox.counts(up).await.unwrap();
    assert_eq!(
        (counts.pending, counts.dead, counts.oldest_queued_ms),
        (2, 1, Some(T0 + 1))
    );
    assert!(outbox
        .list("nobody-here", Status::Pending, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        outbox.counts("nobody-here").await.unwrap(),
        crate::outbox::Counts::default()
    );
}
