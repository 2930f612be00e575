//! The embedded outbox's records, written inside the writer's batch: a delivery's record is
//! put, changed or removed there, and what that does to the indexes in memory is noted
//! beside it, to be applied once the batch is committed.
//!
//! A fjall write batch is not read back before it is committed, so the records this batch
//! wrote are kept beside it ([`Tables::written`]): a later change of the same batch (a
//! delivery queued and settled within one commit, say) sees them.

use std::collections::HashMap;
use std::sync::PoisonError;

use fjall::{Keyspace, OwnedWriteBatch, Slice};

use super::index::{Change, Place};
use super::{fjall_error, key, Shared};
use crate::outbox::record::{decode, encode};
use crate::outbox::{Delivery, DeliveryId, OutboxError};

/// A record's value: the id, then the encoded delivery.
pub(super) fn split(value: &[u8]) -> Option<(DeliveryId, &[u8])> {
    let (id, rest) = value.split_first_chunk::<16>()?;
    Some((DeliveryId::from_bytes(*id), rest))
}

/// Decodes the record at `seq`; one that does not decode is corrupt.
pub(super) fn decode_record(seq: u64, value: &[u8]) -> Result<Delivery, OutboxError> {
    let corrupt = |e: &str| OutboxError::Corrupt(format!("record {seq}: {e}"));
    let (id, rest) = split(value).ok_or_else(|| corrupt("no id"))?;
    decode(id, rest).map_err(|e| OutboxError::Corrupt(format!("delivery {id}: {e}")))
}

/// The committed record at `seq`.
pub(super) fn load(records: &Keyspace, seq: u64) -> Result<Option<Delivery>, OutboxError> {
    match records.get(key(seq)).map_err(fjall_error)? {
        Some(value) => decode_record(seq, &value).map(Some),
        None => Ok(None),
    }
}

/// A record's value for `d`.
pub(super) fn value_of(d: &Delivery) -> Slice {
    let mut value = Vec::with_capacity(16 + 256 + d.body.len());
    value.extend_from_slice(&d.id.bytes());
    value.extend_from_slice(&encode(d));
    Slice::from(value)
}

/// One batch of changes to the records, and its changes to the indexes, applied once the
/// batch is committed.
pub(super) struct Tables<'t> {
    records: &'t Keyspace,
    batch: OwnedWriteBatch,
    /// The records this batch wrote (`None`: removed), by sequence number.
    written: HashMap<u64, Option<Slice>>,
    memory: &'t Shared,
    /// Ids this batch queued (`Some(seq)`) or removed (`None`).
    staged: HashMap<DeliveryId, Option<u64>>,
    changes: Vec<Change>,
    next_seq: u64,
}

/// What a batch did: its writes, to commit, and its changes to the indexes, to apply once
/// they are committed.
pub(super) struct Staged {
    pub(super) batch: OwnedWriteBatch,
    pub(super) changes: Vec<Change>,
    pub(super) next_seq: u64,
}

/// The batch was committed: the indexes follow.
pub(super) fn apply(changes: Vec<Change>, memory: &Shared) {
    let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
    for change in changes {
        memory.apply(change);
    }
}

impl<'t> Tables<'t> {
    pub(super) fn new(
        records: &'t Keyspace,
        batch: OwnedWriteBatch,
        memory: &'t Shared,
        next_seq: u64,
    ) -> Self {
        Self {
            records,
            batch,
            written: HashMap::new(),
            memory,
            staged: HashMap::new(),
            changes: Vec::new(),
            next_seq,
        }
    }

    pub(super) fn finish(self) -> Staged {
        Staged {
            batch: self.batch,
            changes: self.changes,
            next_seq: self.next_seq,
        }
    }

    /// Where `id`'s record is, as this batch has it so far.
    pub(super) fn seq_of(&self, id: DeliveryId) -> Option<u64> {
        match self.staged.get(&id) {
            Some(seq) => *seq,
            None => self
                .memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .seq_of(id),
        }
    }

    /// The record at `seq` as this batch has it so far.
    fn load(&self, seq: u64) -> Result<Option<Delivery>, OutboxError> {
        match self.written.get(&seq) {
            Some(Some(value)) => decode_record(seq, value).map(Some),
            Some(None) => Ok(None),
            None => load(self.records, seq),
        }
    }
}

/// Writes `d` at `seq` (a new record, or one whose old index entries are noted removed).
fn put_at(tables: &mut Tables<'_>, seq: u64, d: &Delivery) {
    let value = value_of(d);
    tables.batch.insert(tables.records, key(seq), value.clone());
    tables.written.insert(seq, Some(value));
    tables.staged.insert(d.id, Some(seq));
    tables.changes.push(Change::Put(d.id, Place::of(seq, d)));
}

/// Queues `d` under the next sequence number unless its id is there: 1 if queued.
pub(super) fn insert_new(tables: &mut Tables<'_>, d: &Delivery) -> Result<u64, OutboxError> {
    if tables.seq_of(d.id).is_some() {
        return Ok(0);
    }
    let seq = tables.next_seq;
    tables.next_seq += 1;
    put_at(tables, seq, d);
    Ok(1)
}

/// Applies `f` to the delivery `id` inside the writer's batch: `f` gets it as it is and
/// returns it as it should be (`None`: delete). 0 when there is no such delivery.
pub(super) fn change_one(
    tables: &mut Tables<'_>,
    id: DeliveryId,
    f: impl FnOnce(Delivery) -> Option<Delivery>,
) -> Result<u64, OutboxError> {
    match tables.seq_of(id) {
        Some(seq) => change_at(tables, seq, f),
        None => Ok(0),
    }
}

/// [`change_one`] for the record at `seq`. A changed delivery keeps its sequence number.
pub(super) fn change_at(
    tables: &mut Tables<'_>,
    seq: u64,
    f: impl FnOnce(Delivery) -> Option<Delivery>,
) -> Result<u64, OutboxError> {
    let Some(old) = tables.load(seq)? else {
        return Ok(0);
    };
    let id = old.id;
    tables
        .changes
        .push(Change::Removed(id, Place::of(seq, &old)));
    match f(old) {
        Some(new) => put_at(tables, seq, &new),
        None => {
            tables.batch.remove(tables.records, key(seq));
            tables.written.insert(seq, None);
            tables.staged.insert(id, None);
        }
    }
    Ok(1)
}
