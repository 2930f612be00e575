//! The embedded outbox's tables: writing and removing a delivery with its index entries
//! inside the writer's transaction.

use std::collections::HashMap;
use std::sync::PoisonError;

use redb::{ReadableTable, Table, WriteTransaction};

use super::{storage, Ids, Index, RECORDS};
use crate::outbox::record::{decode, encode};
use crate::outbox::{Delivery, DeliveryId, OutboxError, Status};

pub(super) fn index_name(kind: &str, upstream: &str) -> String {
    format!("{kind}:{upstream}")
}

/// A record's value: the id, then the encoded delivery.
pub(super) fn split(value: &[u8]) -> Option<(DeliveryId, &[u8])> {
    let (id, rest) = value.split_first_chunk::<16>()?;
    Some((DeliveryId::from_bytes(*id), rest))
}

/// Reads the record at `seq` inside a transaction; a record that does not decode is
/// corrupt.
pub(super) fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<Delivery>, OutboxError> {
    let Some(value) = table.get(seq).map_err(storage)? else {
        return Ok(None);
    };
    let corrupt = |e: &str| OutboxError::Corrupt(format!("record {seq}: {e}"));
    let (id, rest) = split(value.value()).ok_or_else(|| corrupt("no id"))?;
    decode(id, rest)
        .map(Some)
        .map_err(|e| OutboxError::Corrupt(format!("delivery {id}: {e}")))
}

/// The tables one batch of changes writes, each opened once per transaction: opening and
/// closing a redb table costs a lookup and a write of its root, which per change would
/// be most of a commit's work. Also the batch's changes to the id map, applied once the
/// batch is committed.
pub(super) struct Tables<'t> {
    txn: &'t WriteTransaction,
    records: Option<Table<'t, u64, &'static [u8]>>,
    indexes: HashMap<String, Table<'t, (u64, u64), ()>>,
    ids: &'t Ids,
    /// Ids this batch queued (`Some(seq)`) or removed (`None`).
    staged: HashMap<DeliveryId, Option<u64>>,
    next_seq: u64,
}

/// What a batch did to the id map.
pub(super) struct Staged {
    changes: HashMap<DeliveryId, Option<u64>>,
    pub(super) next_seq: u64,
}

impl Staged {
    /// The batch was committed: the map follows.
    pub(super) fn apply(self, ids: &Ids) {
        let mut ids = ids.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, seq) in self.changes {
            match seq {
                Some(seq) => ids.insert(id, seq),
                None => ids.remove(&id),
            };
        }
    }
}

impl<'t> Tables<'t> {
    pub(super) fn new(txn: &'t WriteTransaction, ids: &'t Ids, next_seq: u64) -> Self {
        Self {
            txn,
            records: None,
            indexes: HashMap::new(),
            ids,
            staged: HashMap::new(),
            next_seq,
        }
    }

    pub(super) fn finish(self) -> Staged {
        Staged {
            changes: self.staged,
            next_seq: self.next_seq,
        }
    }

    /// Where `id`'s record is, as this batch has it so far.
    pub(super) fn seq_of(&self, id: DeliveryId) -> Option<u64> {
        match self.staged.get(&id) {
            Some(seq) => *seq,
            None => self
                .ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .copied(),
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

    fn index(
        &mut self,
        kind: &str,
        upstream: &str,
    ) -> Result<&mut Table<'t, (u64, u64), ()>, OutboxError> {
        let name = index_name(kind, upstream);
        if !self.indexes.contains_key(&name) {
            let table = self.txn.open_table(Index::new(&name)).map_err(storage)?;
            self.indexes.insert(name.clone(), table);
        }
        self.indexes
            .get_mut(&name)
            .ok_or_else(|| OutboxError::Unavailable(format!("table {name}")))
    }
}

/// The index entries of `d`: (table kind, time).
fn entries(d: &Delivery) -> Vec<(&'static str, u64)> {
    match d.status {
        Status::Pending => vec![("due", d.next_ms), ("age", d.queued_ms)],
        Status::Dead => vec![("dead", d.queued_ms)],
    }
}

/// Writes `d` at `seq` with its index entries (the record is new or its old entries are
/// removed).
fn put_at(tables: &mut Tables<'_>, seq: u64, d: &Delivery) -> Result<(), OutboxError> {
    let mut value = Vec::with_capacity(16 + 256 + d.body.len());
    value.extend_from_slice(&d.id.bytes());
    value.extend_from_slice(&encode(d));
    tables.records()?.insert(seq, &value[..]).map_err(storage)?;
    for (kind, at) in entries(d) {
        tables
            .index(kind, &d.upstream)?
            .insert((at, seq), ())
            .map_err(storage)?;
    }
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
    tables.staged.insert(d.id, Some(seq));
    Ok(1)
}

/// Removes `d`'s index entries.
fn unput(tables: &mut Tables<'_>, seq: u64, d: &Delivery) -> Result<(), OutboxError> {
    for (kind, at) in entries(d) {
        tables
            .index(kind, &d.upstream)?
            .remove((at, seq))
            .map_err(storage)?;
    }
    Ok(())
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
    unput(tables, seq, &old)?;
    match f(old) {
        Some(new) => put_at(tables, seq, &new)?,
        None => {
            tables.records()?.remove(seq).map_err(storage)?;
            tables.staged.insert(id, None);
        }
    }
    Ok(1)
}
