//! The embedded outbox's tables: writing and removing a delivery with its index entries
//! inside the writer's transaction.

use redb::{ReadableTable, WriteTransaction};

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

/// Writes `d` and its index entries (the record is new or its old entries are removed).
pub(super) fn put(txn: &WriteTransaction, d: &Delivery) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    let mut records = txn.open_table(DELIVERIES).map_err(storage)?;
    records.insert(&raw[..], &encode(d)[..]).map_err(storage)?;
    match d.status {
        Status::Pending => {
            index_insert(txn, "due", &d.upstream, d.next_ms, &raw)?;
            index_insert(txn, "age", &d.upstream, d.queued_ms, &raw)?;
        }
        Status::Dead => index_insert(txn, "dead", &d.upstream, d.queued_ms, &raw)?,
    }
    Ok(())
}

/// Removes `d`'s index entries (and the record itself with `record`).
pub(super) fn unput(txn: &WriteTransaction, d: &Delivery, record: bool) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    match d.status {
        Status::Pending => {
            index_remove(txn, "due", &d.upstream, d.next_ms, &raw)?;
            index_remove(txn, "age", &d.upstream, d.queued_ms, &raw)?;
        }
        Status::Dead => index_remove(txn, "dead", &d.upstream, d.queued_ms, &raw)?,
    }
    if record {
        let mut records = txn.open_table(DELIVERIES).map_err(storage)?;
        records.remove(&raw[..]).map_err(storage)?;
    }
    Ok(())
}

pub(super) fn index_insert(
    txn: &WriteTransaction,
    kind: &str,
    upstream: &str,
    at: u64,
    id: &[u8; 16],
) -> Result<(), OutboxError> {
    let name = index_name(kind, upstream);
    let mut table = txn.open_table(Index::new(&name)).map_err(storage)?;
    table.insert((at, &id[..]), ()).map_err(storage)?;
    Ok(())
}

pub(super) fn index_remove(
    txn: &WriteTransaction,
    kind: &str,
    upstream: &str,
    at: u64,
    id: &[u8; 16],
) -> Result<(), OutboxError> {
    let name = index_name(kind, upstream);
    let mut table = txn.open_table(Index::new(&name)).map_err(storage)?;
    table.remove((at, &id[..])).map_err(storage)?;
    Ok(())
}

/// Applies `f` to the delivery `id` inside the writer's transaction: `f` gets it as it
/// is (`None` if missing) and returns it as it should be (`None`: delete).
pub(super) fn change_one(
    txn: &WriteTransaction,
    id: DeliveryId,
    f: impl FnOnce(Delivery) -> Option<Delivery>,
) -> Result<u64, OutboxError> {
    let old = {
        let records = txn.open_table(DELIVERIES).map_err(storage)?;
        load(&records, id)?
    };
    let Some(old) = old else {
        return Ok(0);
    };
    unput(txn, &old, true)?;
    if let Some(new) = f(old) {
        put(txn, &new)?;
    }
    Ok(1)
}
