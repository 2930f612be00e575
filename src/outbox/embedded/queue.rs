//! [`Outbox`] for the embedded outbox: reads in read transactions beside the writer, every
//! change through it.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::tables::{change_at, change_one, index_name, insert_new, load};
use super::{storage, EmbeddedOutbox, Index, IndexTable, RecordTable, RECORDS};
use crate::outbox::{
    Counts, Delivery, DeliveryId, Failure, NewDelivery, Outbox, OutboxError, Status,
};

/// An index table in a read transaction; `None` when nothing was ever written to it.
fn read_index(
    txn: &ReadTransaction,
    kind: &str,
    upstream: &str,
) -> Result<Option<IndexTable>, OutboxError> {
    let name = index_name(kind, upstream);
    match txn.open_table(Index::new(&name)) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

fn read_records(txn: &ReadTransaction) -> Result<Option<RecordTable>, OutboxError> {
    match txn.open_table(RECORDS) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

impl EmbeddedOutbox {
    /// Sequence numbers in the index `kind:upstream` in key order, with their key time,
    /// while `keep` says so (it sees each and decides whether to go on).
    fn scan(
        &self,
        kind: &str,
        upstream: &str,
        mut keep: impl FnMut(u64, u64) -> bool,
    ) -> Result<(), OutboxError> {
        let txn = self.read()?;
        let Some(index) = read_index(&txn, kind, upstream)? else {
            return Ok(());
        };
        for entry in index.iter().map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (at, seq) = key.value();
            if !keep(at, seq) {
                break;
            }
        }
        Ok(())
    }

    fn load_many(&self, seqs: &[u64]) -> Result<Vec<Delivery>, OutboxError> {
        let txn = self.read()?;
        let Some(records) = read_records(&txn)? else {
            return Ok(Vec::new());
        };
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
        let mut seqs = Vec::new();
        {
            let mut claims = self.claims();
            self.scan("due", upstream, |at, seq| {
                if at > now_ms || seqs.len() >= limit {
                    return false;
                }
                if claims.get(&seq).is_none_or(|until| *until <= now_ms) {
                    claims.insert(seq, now_ms.saturating_add(lease_ms));
                    seqs.push(seq);
                }
                true
            })?;
        }
        self.load_many(&seqs)
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<u64>, OutboxError> {
        let claims = self.claims().clone();
        let mut next: Option<u64> = None;
        self.scan("due", upstream, |at, seq| match claims.get(&seq) {
            // Claimed: due again when the claim ends (if it is not settled first).
            Some(until) => {
                next = Some(next.map_or(*until, |n| n.min(*until)));
                true
            }
            None => {
                next = Some(next.map_or(at, |n| n.min(at)));
                false
            }
        })?;
        Ok(next)
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
        let kind = match status {
            Status::Pending => "due",
            Status::Dead => "dead",
        };
        let mut seqs = Vec::new();
        self.scan(kind, upstream, |_, seq| {
            seqs.push(seq);
            seqs.len() < limit
        })?;
        seqs.truncate(limit);
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
        let mut seqs = Vec::new();
        self.scan("dead", upstream, |_, seq| {
            seqs.push(seq);
            true
        })?;
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
        let txn = self.read()?;
        let len = |kind: &str| -> Result<u64, OutboxError> {
            match read_index(&txn, kind, upstream)? {
                Some(t) => t.len().map_err(storage),
                None => Ok(0),
            }
        };
        let oldest = match read_index(&txn, "age", upstream)? {
            Some(t) => t.first().map_err(storage)?.map(|(k, _)| k.value().0),
            None => None,
        };
        Ok(Counts {
            pending: len("due")?,
            dead: len("dead")?,
            oldest_queued_ms: oldest,
        })
    }

    async fn ping(&self) -> Result<(), OutboxError> {
        self.read().map(|_| ())
    }
}
