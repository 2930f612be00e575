//! The embedded outbox's tables: writing and removing a delivery with its index entries
//! inside the writer's transaction.

use std::collections::HashMap;

use redb::{ReadableTable, Table, WriteTransaction};

use super::{storage, Index, DELIVERIES};
use crate::outbox::record::{decode, encode};
use crate::outbox::{Delivery, DeliveryId, OutboxError, Status};

pub(super) fn index_name(kind: &str, upstream: &str) -> String {
    format!("{kind}/{upstream}")
}

/// Reads one delivery inside a transaction; a record that does not decode is corrupt.
pub(super) fn load(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    id: DeliveryId,
) -> Result<Option<Delivery>, OutboxError> {
    let raw = id_bytes(id);
    let Some(value) = table.get(&raw[..]).map_err(storage)? else {
        return Ok(None);
    };
    decode(id, value.value())
        .map(Some)
        .map_err(|e| OutboxError::Corrupt(format!("delivery {id}: {e}")))
}

pub(super) fn id_bytes(id: DeliveryId) -> [u8; 16] {
    id.bytes()
}

/// The tables one batch of changes writes, each opened once per transaction: opening and
/// closing a redb table costs a lookup and a write of its root, which per change would
/// be most of a commit's work.
pub(super) struct Tables<'t> {
    txn: &'t WriteTransaction,
    records: Option<Table<'t, &'static [u8], &'static [u8]>>,
    indexes: HashMap<String, Table<'t, (u64, &'static [u8]), ()>>,
}

impl<'t> Tables<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            records: None,
            indexes: HashMap::new(),
        }
    }

    pub(super) fn records(
        &mut self,
    ) -> Result<&mut Table<'t, &'static [u8], &'static [u8]>, OutboxError> {
        if self.records.is_none() {
            self.records = Some(self.txn.open_table(DELIVERIES).map_err(storage)?);
        }
        self.records
            .as_mut()
            .ok_or_else(|| OutboxError::Unavailable("deliveries table".into()))
    }

    fn index(
        &mut self,
        kind: &str,
        upstream: &str,
    ) -> Result<&mut Table<'t, (u64, &'static [u8]), ()>, OutboxError> {
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

/// Writes `d` and its index entries (the record is new or its old entries are removed).
pub(super) fn put(tables: &mut Tables<'_>, d: &Delivery) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    tables
        .records()?
        .insert(&raw[..], &encode(d)[..])
        .map_err(storage)?;
    for (kind, at) in entries(d) {
        tables
            .index(kind, &d.upstream)?
            .insert((at, &raw[..]), ())
            .map_err(storage)?;
    }
    Ok(())
}

/// Removes `d`'s index entries (and the record itself with `record`).
fn unput(tables: &mut Tables<'_>, d: &Delivery, record: bool) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    for (kind, at) in entries(d) {
        tables
            .index(kind, &d.upstream)?
            .remove((at, &raw[..]))
            .map_err(storage)?;
    }
    if record {
        tables.records()?.remove(&raw[..]).map_err(storage)?;
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
    let Some(old) = load(tables.records()?, id)? else {
        return Ok(0);
    };
    unput(tables, &old, true)?;
    if let Some(new) = f(old) {
        put(tables, &new)?;
    }
    Ok(1)
}
