//! The outbox file of earlier versions: `outbox.redb` (a redb database) in `outbox.path`.
//! At open its records are imported into the fjall database in one synced batch, then the
//! file is renamed `outbox.redb.imported`, so an upgrade loses nothing that was queued.
//!
//! The import is idempotent: a delivery already in the database (an import cut short by a
//! crash before the rename) is not imported twice. Records keep their order; the index
//! tables of an older layout (`due:`, `age:`, `dead:`) say nothing the records do not, and
//! are ignored. A file of the id-keyed layout of an unreleased development build is
//! refused, as it always was.

use std::path::Path;

use fjall::{Database, Keyspace, PersistMode};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::index::{Change, Memory, Place};
use super::tables::decode_record;
use super::{fjall_error, key};
use crate::outbox::OutboxError;

/// The file, in `outbox.path`.
pub(super) const FILE: &str = "outbox.redb";
/// What it is renamed once imported.
pub(super) const IMPORTED: &str = "outbox.redb.imported";
/// Its records: sequence number → id, then the encoded delivery (the same value as now).
const RECORDS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("queue");
/// The id-keyed table of the layout before the sequence numbers (never released).
const UNRELEASED: &str = "deliveries";

/// Imports `dir/outbox.redb`, if there is one, into `records`, giving each new delivery the
/// next sequence number and noting it in `memory`; the number of deliveries imported.
pub(super) fn import(
    dir: &Path,
    db: &Database,
    records: &Keyspace,
    memory: &mut Memory,
    next_seq: &mut u64,
) -> Result<usize, OutboxError> {
    let file = dir.join(FILE);
    if !file.exists() {
        return Ok(0);
    }
    let cannot = |e: &dyn std::fmt::Display| {
        OutboxError::Unavailable(format!("cannot import {}: {e}", file.display()))
    };
    let old = redb::Database::open(&file).map_err(|e| cannot(&e))?;
    let txn = old.begin_read().map_err(|e| cannot(&e))?;
    if txn
        .list_tables()
        .map_err(|e| cannot(&e))?
        .any(|t| t.name() == UNRELEASED)
    {
        return Err(OutboxError::Unavailable(format!(
            "{} has the outbox layout of an unreleased development build; move it away",
            file.display()
        )));
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    let mut imported = Vec::new();
    match txn.open_table(RECORDS) {
        Ok(table) => {
            for entry in table.iter().map_err(|e| cannot(&e))? {
                let (seq, value) = entry.map_err(|e| cannot(&e))?;
                let d = decode_record(seq.value(), value.value())?;
                if memory.seq_of(d.id).is_some() {
                    continue;
                }
                let seq = *next_seq;
                *next_seq += 1;
                // The value has the same format now: stored as it was read.
                batch.insert(records, key(seq), value.value());
                imported.push(Change::Put(d.id, Place::of(seq, &d)));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(cannot(&e)),
    }
    drop(txn);
    drop(old);
    let n = imported.len();
    batch.commit().map_err(fjall_error)?;
    for change in imported {
        memory.apply(change);
    }
    std::fs::rename(&file, dir.join(IMPORTED)).map_err(|e| {
        OutboxError::Unavailable(format!(
            "imported {} but cannot rename it to {IMPORTED}: {e}",
            file.display()
        ))
    })?;
    tracing::info!(file = %file.display(), deliveries = n, "imported the outbox of an earlier version");
    Ok(n)
}
