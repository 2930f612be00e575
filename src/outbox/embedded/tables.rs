//! The embedded outbox's one table, written inside the writer's transaction: a delivery's
//! record is put, changed or removed there, and what that does to the indexes in memory
//! is noted beside it, to be applied once the batch is committed.

use std::collections::HashMap;
use std::sync::PoisonError;

use redb::{ReadableTable, Table, WriteTransaction};

use super::index::{Change, Place};
use super::{storage, Shared, RECORDS};
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

/// Reads the record at `seq` inside a transaction.
pub(super) fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<Delivery>, OutboxError> {
    match table.get(seq).map_err(storage)? {
        Some(value) => decode_record(seq, value.value()).map(Some),
        None => Ok(None),
    }
}

/// The records table of one batch of changes, opened once per transaction (opening and
/// closing a redb table costs a lookup and a write of its root), and the batch's changes
/// to the indexes, applied once the batch is committed.
pub(super) struct Tables<'t> {
    txn: &'t WriteTransaction,
    records: Option<Table<'t, u64, &'static [u8]>>,
    memory: &'t Shared,
    /// Ids this batch queued (`Some(seq)`) or removed (`None`).
    staged: HashMap<DeliveryId, Option<u64>>,
    changes: Vec<Change>,
    next_seq: u64,
}

/// What a batch did to the indexes.
pub(super) struct Staged {
    changes: Vec<Change>,
    pub(super) next_seq: u64,
}

impl Staged {
    /// The batch was committed: the indexes follow.
    pub(super) fn apply(self, memory: &Shared) {
        let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
        for change in self.changes {
            memory.apply(change);
        }
    }
}

impl<'t> Tables<'t> {
    pub(super) fn new(txn: &'t WriteTransaction, memory: &'t Shared, next_seq: u64) -> Self {
        Self {
            txn,
            records: None,
            memory,
            staged: HashMap::new(),
            changes: Vec::new(),
            next_seq,
        }
    }

    pub(super) fn finish(self) -> Staged {
        Staged {
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

    fn records(&mut self) -> Result<&mut Table<'t, u64, &'static [u8]>, OutboxError> {
        if self.records.is_none() {
            self.records = Some(self.txn.open_table(RECORDS).map_err(storage)?);
        }
        self.records
            .as_mut()
            .ok_or_else(|| OutboxError::Unavailable("records table".into()))
    }
}

/// Writes `d` at `seq` (a new record, or one whose old index entries are noted removed).
fn put_at(tables: &mut Tables<'_>, seq: u64, d: &Delivery) -> Result<(), OutboxError> {
    let mut value = Vec::with_capacity(16 + 256 + d.body.len());
    value.extend_from_slice(&d.id.bytes());
    value.extend_from_slice(&encode(d));
    tables.records()?.insert(seq, &value[..]).map_err(storage)?;
    tables.staged.insert(d.id, Some(seq));
    tables.changes.push(Change::Put(d.id, Place::of(seq, d)));
    Ok(())
}

/// Queues `d` under the next sequence number unless its id is there: 1 if queued.
pub(super) fn insert_new(tables: &mut Tables<'_>, d: &Delivery) -> Result<u64, OutboxError> {
    if tables.seq_of(d.id).is_some() {
        return Ok(0);
    }
    let seq = tables.next_seq;
    tables.next_seq += 1;
    put_at(tables, seq, d)?;
    Ok(1)
}

/// Applies `f` to the delivery `id` inside the writer's transaction: `f` gets it as it
/// is and returns it as it should be (`None`: delete). 0 when there is no such delivery.
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
    let Some(old) = load(tables.records()?, seq)? else {
        return Ok(0);
    };
    let id = old.id;
    tables
        .changes
        .push(Change::Removed(id, Place::of(seq, &old)));
    match f(old) {
        Some(new) => put_at(tables, seq, &new)?,
        None => {
            tables.records()?.remove(seq).map_err(storage)?;
            tables.staged.insert(id, None);
        }
    }
    Ok(1)
}
