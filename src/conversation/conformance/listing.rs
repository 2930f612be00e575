//! Checks of the admin listing and the count.

use bytes::Bytes;

use super::{fresh_key, T0};
use crate::conversation::{
    Commit, ConversationKey, ConversationStore, FinalAnswer, LastSaid, Opening, Said, Summary,
    Till, Update,
};
use crate::telemetry::Outcome;

pub(super) async fn list_and_count_see_conversations_newest_first<S: ConversationStore>(store: &S) {
    // Later than every other check's conversation, so these two are the newest.
    let t = T0 + 3_600_000;
    let (old, new) = (fresh_key(), fresh_key());
    store
        .begin(old, Opening::event("orderPaid"), t)
        .await
        .unwrap();
    store
        .begin(old, Opening::event("orderPaid"), t + 500)
        .await
        .unwrap();
    store
        .claim_forward(old, "backend", t + 500, t + 60_000)
        .await
        .unwrap();
    store
        .begin(new, Opening::event("addSessionLine"), t + 1_000)
        .await
        .unwrap();
    let done = Update {
        state: None,
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        }),
        said: None,
    };
    store.commit(new, 0, done, t + 1_000).await.unwrap();

    assert!(store.count().await.unwrap() >= 2);
    let now = t + 2_000;
    let all = store.list(now, 10_000).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].age_ms <= w[1].age_ms),
        "newest first"
    );
    let find = |key: ConversationKey| {
        let hex = key.to_string();
        all.iter().position(|s| s.key == hex).expect("listed")
    };
    let (o, n) = (&all[find(old)], &all[find(new)]);
    assert!(find(new) < find(old));
    assert_eq!(
        (o.event.as_str(), o.attempts, o.finished),
        ("orderPaid", 2, false)
    );
    assert_eq!((o.age_ms, o.idle_ms), (2_000, 1_500));
    assert_eq!(o.pending_forwards, ["backend"]);
    assert_eq!(
        (n.event.as_str(), n.attempts, n.finished),
        ("addSessionLine", 1, true)
    );
    assert!(n.pending_forwards.is_empty());

    let top = store.list(now, 1).await.unwrap();
    assert_eq!(top.len(), 1, "limit is respected");
    assert_eq!(top[0].key, new.to_string());
}

fn till(branch: u32, workplace: u32) -> Till {
    Till {
        branch: Some(branch),
        workplace: Some(workplace),
    }
}

pub(super) async fn origin_and_last_decision_are_kept_read_and_listed<S: ConversationStore>(
    store: &S,
) {
    let t = T0 + 3_700_000;
    let key = fresh_key();
    let opening = Opening {
        event: "addSessionLine",
        subscription: "shop",
        till: till(12, 3),
    };
    let first = store.begin(key, opening, t).await.unwrap();
    assert_eq!(first.origin.event.as_ref(), "addSessionLine");
    assert_eq!(first.origin.subscription.as_ref(), "shop");
    assert_eq!(first.origin.till, till(12, 3));
    assert!(first.said.is_none(), "no decision before the first commit");

    // A later call with another opening does not change what the first one set.
    let other = Opening {
        event: "addSessionLine",
        subscription: "other",
        till: till(1, 1),
    };
    let second = store.begin(key, other, t + 1).await.unwrap();
    assert_eq!(second.origin, first.origin);

    let waiting = Said::new(Outcome::KeepPolling, "ID check", "Één moment");
    let update = Update::said(waiting.clone());
    let saved = store.commit(key, second.version, update, t + 1).await;
    assert!(matches!(saved.unwrap(), Commit::Saved));
    let loaded = store.load(key).await.unwrap().unwrap();
    assert_eq!(loaded.said.as_deref(), Some(&waiting));
    // A commit without a decision keeps the last one.
    let state_only = Update {
        state: super::state("{\"n\":1}"),
        ..Update::default()
    };
    store
        .commit(key, loaded.version, state_only, t + 2)
        .await
        .unwrap();
    let loaded = store.load(key).await.unwrap().unwrap();
    assert_eq!(loaded.said.as_deref(), Some(&waiting));

    let summary = listed(store, key, t + 3).await;
    assert_eq!(summary.subscription, "shop");
    assert_eq!(summary.till, till(12, 3));
    assert_eq!(summary.last.decision, Some("keep_polling"));
    assert_eq!(summary.last.message.as_deref(), Some("ID check"));
    assert_eq!(summary.last.customer_message.as_deref(), Some("Één moment"));

    // No till and no messages: `None`, not 0 or "".
    let bare = fresh_key();
    let s = store
        .begin(bare, Opening::event("scanCode"), t + 4)
        .await
        .unwrap();
    assert_eq!(s.origin.till, Till::default());
    let finished = Update {
        finished: Some(FinalAnswer {
            status: 400,
            body: Bytes::from_static(b"{}"),
        }),
        said: Some(Said::new(Outcome::Rejected, "", "")),
        ..Update::default()
    };
    store
        .commit(bare, s.version, finished, t + 4)
        .await
        .unwrap();
    let summary = listed(store, bare, t + 5).await;
    assert_eq!(summary.till, Till::default());
    assert_eq!(summary.subscription, "");
    assert_eq!(
        summary.last,
        LastSaid {
            decision: Some("rejected"),
            message: None,
            customer_message: None,
        }
    );
}

async fn listed<S: ConversationStore>(store: &S, key: ConversationKey, now: u64) -> Summary {
    let hex = key.to_string();
    let all = store.list(now, 10_000).await.unwrap();
    all.into_iter().find(|s| s.key == hex).expect("listed")
}

pub(super) async fn active_counts_only_unfinished_conversations<S: ConversationStore>(store: &S) {
    let t = T0 + 3_800_000;
    let before = store.active(t).await.unwrap();
    let (a, b, done) = (fresh_key(), fresh_key(), fresh_key());
    for key in [a, b, done] {
        store.begin(key, Opening::event("e"), t).await.unwrap();
    }
    assert_eq!(store.active(t).await.unwrap(), before + 3);
    let finish = Update {
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        }),
        ..Update::default()
    };
    store.commit(done, 0, finish, t).await.unwrap();
    assert_eq!(store.active(t).await.unwrap(), before + 2);
    // Still counted: a conversation's last decision is not its end.
    let said = Update::said(Said::new(Outcome::RuleError, "", ""));
    store.commit(a, 0, said, t).await.unwrap();
    assert_eq!(store.active(t).await.unwrap(), before + 2);
}
