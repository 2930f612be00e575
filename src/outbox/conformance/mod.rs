//! One suite every [`Outbox`] must pass (STYLE.md 6), run against the embedded outbox
//! always and against Redis when one answers.
//!
//! Each check uses fresh random keys and its own upstream name, so checks (and parallel
//! runs sharing a Redis) never see each other's deliveries. Time is passed in; nothing
//! sleeps.

#![allow(clippy::unwrap_used)]

mod claims;
mod operator;
mod redis;

use bytes::Bytes;

use super::{EmbeddedOutbox, NewDelivery, Outbox};
use crate::conversation::conformance::fresh_key;

/// A point in time the checks count from (ms).
const T0: u64 = 1_700_000_000_000;
const LEASE: u64 = 30_000;

/// Runs every check against `outbox`; `upstream(name)` makes a name unique to this run.
pub(crate) async fn run<O: Outbox + Clone>(outbox: &O, upstream: &dyn Fn(&str) -> String) {
    claims::enqueue_is_idempotent_per_conversation_and_upstream(outbox, &upstream("a")).await;
    claims::due_deliveries_are_claimed_oldest_first_up_to_the_limit(outbox, &upstream("b")).await;
    claims::a_claim_hides_a_delivery_until_its_lease_ends(outbox, &upstream("c")).await;
    claims::concurrent_claimers_never_get_the_same_delivery(outbox, &upstream("d")).await;
    claims::delivered_is_gone_and_not_queued_again_by_its_id(outbox, &upstream("e")).await;
    claims::a_failure_counts_the_attempt_and_schedules_or_kills(outbox, &upstream("f")).await;
    claims::next_due_follows_schedule_and_claims(outbox, &upstream("g")).await;
    claims::a_released_claim_is_due_at_once(outbox, &upstream("h")).await;
    claims::concurrent_enqueues_all_arrive(outbox, &upstream("i")).await;
    operator::retry_of_a_dead_delivery_starts_afresh(outbox, &upstream("j")).await;
    operator::retry_dead_revives_every_dead_one_of_the_upstream(outbox, &upstream("k")).await;
    operator::delete_forgets_and_unknown_ids_are_false(outbox, &upstream("l")).await;
    operator::lists_and_counts_see_pending_and_dead(outbox, &upstream("m")).await;
    outbox.ping().await.unwrap();
}

fn new(upstream: &str, now_ms: u64) -> NewDelivery {
    NewDelivery {
        upstream: upstream.to_owned(),
        event: "completeSession".into(),
        key: fresh_key(),
        subscription: "shop".into(),
        body: Bytes::from_static(b"{\"session\":{\"total\":12.5,\"n\":\"\\u00fc\"}}"),
        now_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = EmbeddedOutbox::open(&dir.path().join("outbox")).unwrap();
    run(&outbox, &|name| name.to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_groups_concurrent_enqueues_into_few_commits() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = EmbeddedOutbox::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..500)
        .map(|_| {
            let o = outbox.clone();
            tokio::spawn(async move { o.enqueue(new("erp", T0)).await.unwrap() })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap());
    }
    assert_eq!(outbox.counts("erp").await.unwrap().pending, 500);
    // 500 fsyncs one after the other take far longer than this on any disk that syncs.
    let commits = outbox.commits();
    assert!(
        commits < 250,
        "{commits} commits for 500 concurrent enqueues"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
