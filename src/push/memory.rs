//! The memory mailbox: a queue per till in this process; a push wakes its till's held
//! calls directly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;

use super::{Every, Message, MessageId, Pending, PushError, PushMailbox, Swept, Till, Wakers};

/// Messages by till tag; cheap to clone. A std lock, held for queue operations only.
#[derive(Clone)]
pub struct MemoryMailbox {
    tills: Arc<Mutex<HashMap<String, Queue>>>,
    wakers: Wakers,
}

/// One till's messages, oldest first.
struct Queue {
    till: Till,
    messages: VecDeque<Message>,
}

impl MemoryMailbox {
    pub fn new(held: Gauge) -> Self {
        Self {
            tills: Arc::default(),
            wakers: Wakers::new(held),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.tills.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops the expired messages of one queue; how many.
fn drop_expired(queue: &mut VecDeque<Message>, now_ms: u64) -> u64 {
    let before = queue.len();
    queue.retain(|m| m.expires_ms > now_ms);
    (before - queue.len()) as u64
}

impl PushMailbox for MemoryMailbox {
    async fn push(
        &self,
        till: &Till,
        body: Bytes,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Message, PushError> {
        let message = Message {
            id: MessageId::random(),
            body,
            queued_ms: now_ms,
            expires_ms,
        };
        let tag = till.tag();
        self.lock()
            .entry(tag.clone())
            .or_insert_with(|| Queue {
                till: till.clone(),
                messages: VecDeque::new(),
            })
            .messages
            .push_back(message.clone());
        self.wakers.wake(&tag);
        Ok(message)
    }

    async fn pending(&self, till: &Till, now_ms: u64, limit: usize) -> Result<Pending, PushError> {
        let tag = till.tag();
        let mut tills = self.lock();
        let Some(Queue {
            messages: queue, ..
        }) = tills.get_mut(&tag)
        else {
            return Ok(Pending::default());
        };
        let expired = drop_expired(queue, now_ms);
        let messages = queue.iter().take(limit).cloned().collect();
        if queue.is_empty() {
            tills.remove(&tag);
        }
        Ok(Pending { messages, expired })
    }

    async fn remove(&self, till: &Till, id: MessageId) -> Result<bool, PushError> {
        let tag = till.tag();
        let mut tills = self.lock();
        let Some(Queue {
            messages: queue, ..
        }) = tills.get_mut(&tag)
        else {
            return Ok(false);
        };
        let found = queue.iter().position(|m| m.id == id);
        if let Some(at) = found {
            queue.remove(at);
        }
        if queue.is_empty() {
            tills.remove(&tag);
        }
        Ok(found.is_some())
    }

    async fn sweep(&self, now_ms: u64) -> Result<Swept, PushError> {
        let mut swept = Swept::default();
        self.lock().retain(
            |_,
             Queue {
                 messages: queue, ..
             }| {
                swept.expired += drop_expired(queue, now_ms);
                swept.pending += queue.len() as u64;
                !queue.is_empty()
            },
        );
        Ok(swept)
    }

    async fn every(&self, now_ms: u64, limit: usize) -> Result<Every, PushError> {
        let mut every = Every::default();
        self.lock().retain(|_, queue| {
            every.expired += drop_expired(&mut queue.messages, now_ms);
            let till = &queue.till;
            every
                .messages
                .extend(queue.messages.iter().map(|m| (till.clone(), m.clone())));
            !queue.messages.is_empty()
        });
        every.newest_first(limit);
        Ok(every)
    }

    fn wakers(&self) -> &Wakers {
        &self.wakers
    }
}
