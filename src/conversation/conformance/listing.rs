//! Checks of the admin listing and the count.

use bytes::Bytes;

use super::{fresh_key, T0};
use crate::conversation::{ConversationKey, ConversationStore, FinalAnswer, Update};

pub(super) async fn list_and_count_see_conversations_newest_first<S: ConversationStore>(store: &S) {
    // Later than every other check's conversation, so these two are the newest.
    let t = T0 + 3_600_000;
    let (old, new) = (fresh_key(), fresh_key());
    store.begin(old, "orderPaid", t).await.unwrap();
    store.begin(old, "orderPaid", t + 500).await.unwrap();
    store
        .claim_forward(old, "backend", t + 500, t + 60_000)
        .await
        .unwrap();
    store.begin(new, "addSessionLine", t + 1_000).await.unwrap();
    let done = Update {
        state: None,
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        }),
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
