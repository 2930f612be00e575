//! [`Push`]: the gateway's handle on the mailbox. It counts what happens to messages
//! (`pollgate_push_messages_total`), and holds a backgroundPoll call until its till has a
//! message, its hold ends, or held calls are released.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Mailbox, Message, MessageId, PushError, PushMailbox, Till};
use crate::config::millis;
use crate::conversation::Clock;
use crate::telemetry::Metrics;

/// At most this many messages are listed for one till.
pub const MAX_LISTED: usize = 1000;

/// A cheap-clone handle: the mailbox, the clock its times come from, the metrics.
#[derive(Clone)]
pub struct Push {
    mailbox: Mailbox,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Push {
    pub fn new(mailbox: Mailbox, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            mailbox,
            clock,
            metrics,
        }
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Queues `body` for `till` for `ttl`.
    pub async fn push(
        &self,
        till: &Till,
        body: Bytes,
        ttl: Duration,
    ) -> Result<Message, PushError> {
        let now = self.clock.now_ms();
        let expires = now.saturating_add(millis(ttl).max(1));
        let message = self.mailbox.push(till, body, now, expires).await?;
        self.metrics.push_message("queued", 1);
        Ok(message)
    }

    /// The till's pending messages, oldest first.
    pub async fn pending(&self, till: &Till, limit: usize) -> Result<Vec<Message>, PushError> {
        let pending = self
            .mailbox
            .pending(till, self.clock.now_ms(), limit)
            .await?;
        self.metrics.push_message("expired", pending.expired);
        Ok(pending.messages)
    }

    /// Every till's pending messages, newest first, at most `limit`.
    pub async fn every(&self, limit: usize) -> Result<Vec<(Till, Message)>, PushError> {
        let every = self.mailbox.every(self.clock.now_ms(), limit).await?;
        self.metrics.push_message("expired", every.expired);
        Ok(every.messages)
    }

    /// Withdraws one message; false when it is not pending.
    pub async fn withdraw(&self, till: &Till, id: MessageId) -> Result<bool, PushError> {
        let removed = self.mailbox.remove(till, id).await?;
        if removed {
            self.metrics.push_message("withdrawn", 1);
        }
        Ok(removed)
    }

    /// Takes a message whose conversation finished with it. Another call of the same till
    /// may have taken it first (a message is delivered at least once): counted once.
    pub async fn delivered(&self, till: &Till, id: MessageId) -> Result<(), PushError> {
        if self.mailbox.remove(till, id).await? {
            self.metrics.push_message("delivered", 1);
        }
        Ok(())
    }

    /// The till's oldest message, waiting for one until `until` (GATEWAY.md 9). `None` when
    /// the hold ended without one, or held calls were released (reload, shutdown). The
    /// message stays pending: the caller takes it with [`Push::delivered`] once its answer
    /// is the conversation's final one.
    pub async fn next(&self, till: &Till, until: Instant) -> Result<Option<Message>, PushError> {
        let wakers = self.mailbox.wakers();
        let mut hold = wakers.hold(&till.tag());
        let notify = hold.notify.clone();
        loop {
            // Armed before looking, so a push between the look and the wait still wakes.
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(first) = self.pending(till, 1).await?.into_iter().next() {
                return Ok(Some(first));
            }
            if wakers.is_closed() {
                return Ok(None);
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(until) => return Ok(None),
                () = hold.released() => return Ok(None),
            }
        }
    }

    /// Ends every held call (a reload: the tills' next calls use the new generation).
    pub fn release(&self) {
        self.mailbox.wakers().release();
    }

    /// Ends every held call and holds none from now on (shutdown).
    pub fn close(&self) {
        self.mailbox.wakers().close();
    }

    /// Drops expired messages and sets `pollgate_push_pending` (at a scrape).
    pub async fn observe(&self) -> Result<(), PushError> {
        let swept = self.mailbox.sweep(self.clock.now_ms()).await?;
        self.metrics.push_message("expired", swept.expired);
        self.metrics.set_push_pending(swept.pending);
        Ok(())
    }
}
