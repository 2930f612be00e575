//! [`Outbox`] for the embedded outbox: point reads of committed records beside the writer,
//! every change through it.

use std::sync::PoisonError;

use super::index::Lanes;
use super::tables::{change_at, change_one, insert_new, load};
use super::EmbeddedOutbox;
use crate::outbox::{
    Counts, Delivery, DeliveryId, Failure, NewDelivery, Outbox, OutboxError, Status,
};

impl EmbeddedOutbox {
    /// Up to `limit` sequence numbers of `upstream`'s lane `pick` (in its order).
    fn seqs(
        &self,
        upstream: &str,
        pick: impl Fn(&Lanes) -> &std::collections::BTreeSet<(u64, u64)>,
        limit: usize,
    ) -> Vec<u64> {
        let memory = self.memory();
        memory.lanes(upstream).map_or_else(Vec::new, |lanes| {
            pick(lanes)
                .iter()
                .take(limit)
                .map(|(_, seq)| *seq)
                .collect()
        })
    }

    fn load_many(&self, seqs: &[u64]) -> Result<Vec<Delivery>, OutboxError> {
        // A record settled between the index's answer and this read is gone: skipped.
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.inner.records.get()?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(d) = load(&records, *seq)? {
                out.push(d);
            }
        }
        Ok(out)
    }
}

impl Outbox for EmbeddedOutbox {
    async fn enqueue(&self, delivery: NewDelivery) -> Result<bool, OutboxError> {
        let d = Delivery::new(delivery);
        let queued = self.write(move |tables| insert_new(tables, &d)).await?;
        Ok(queued == 1)
    }

    async fn claim(
        &self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let seqs = self.memory().claim(upstream, now_ms, lease_ms, limit);
        self.load_many(&seqs)
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<u64>, OutboxError> {
        Ok(self.memory().next_due(upstream))
    }

    async fn delivered(&self, _upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        let seq = self.seq_of(id);
        let result = self
            .write(move |tables| change_one(tables, id, |_| None))
            .await;
        self.unclaim(seq);
        result.map(|_| ())
    }

    async fn failed(
        &self,
        _upstream: &str,
        id: DeliveryId,
        failure: Failure,
    ) -> Result<(), OutboxError> {
        let seq = self.seq_of(id);
        let result = self
            .write(move |tables| {
                change_one(tables, id, |mut d| {
                    d.attempts += 1;
                    match failure {
                        Failure::Retry { next_ms, error } => {
                            d.next_ms = next_ms;
                            d.last_error = Some(error);
                        }
                        Failure::Dead { error } => {
                            d.status = Status::Dead;
                            d.last_error = Some(error);
                        }
                    }
                    Some(d)
                })
            })
            .await;
        self.unclaim(seq);
        result.map(|_| ())
    }

    async fn release(&self, _upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        self.unclaim(self.seq_of(id));
        Ok(())
    }

    async fn get(&self, _upstream: &str, id: DeliveryId) -> Result<Option<Delivery>, OutboxError> {
        match self.seq_of(id) {
            Some(seq) => Ok(self.load_many(&[seq])?.pop()),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        upstream: &str,
        status: Status,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let seqs = match status {
            Status::Pending => self.seqs(upstream, |l| &l.due, limit),
            Status::Dead => self.seqs(upstream, |l| &l.dead, limit),
        };
        self.load_many(&seqs)
    }

    async fn retry(
        &self,
        _upstream: &str,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<bool, OutboxError> {
        let found = self
            .write(move |tables| {
                change_one(tables, id, |mut d| {
                    d.revive(now_ms);
                    Some(d)
                })
            })
            .await?;
        Ok(found == 1)
    }

    async fn retry_dead(&self, upstream: &str, now_ms: u64) -> Result<u64, OutboxError> {
        let seqs = self.seqs(upstream, |l| &l.dead, usize::MAX);
        self.write(move |tables| {
            let mut n = 0;
            for seq in seqs {
                n += change_at(tables, seq, |mut d| {
                    (d.status == Status::Dead).then(|| {
                        d.revive(now_ms);
                        d
                    })
                })?;
            }
            Ok(n)
        })
        .await
    }

    async fn delete(&self, _upstream: &str, id: DeliveryId) -> Result<bool, OutboxError> {
        let seq = self.seq_of(id);
        let found = self
            .write(move |tables| change_one(tables, id, |_| None))
            .await?;
        self.unclaim(seq);
        Ok(found == 1)
    }

    async fn counts(&self, upstream: &str) -> Result<Counts, OutboxError> {
        Ok(self.memory().counts(upstream))
    }

    /// The last commit's error while commits fail (a full disk, say), so `/readyz` shows it.
    async fn ping(&self) -> Result<(), OutboxError> {
        let failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*failing {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}
