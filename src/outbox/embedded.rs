//! The memory store's outbox: a redb database in `outbox.path` (one file,
//! `outbox.redb`), ACID with an fsync on every commit, so a queued delivery survives
//! `kill -9` and power loss once [`Outbox::enqueue`] returned.
//!
//! # Group commit
//!
//! Every change goes to one writer thread ([`writer`]), which applies a batch of them in
//! one write transaction and commits it once (one fsync), then answers each: a burst of
//! concurrent calls costs one sync, not one each. Reads (claims, listings, counts) use the
//! indexes in memory and read transactions beside it, and never wait for the writer.
//!
//! # One table
//!
//! The file holds one table, `queue`: sequence number (u64) → id (16 bytes), then
//! [`record::encode`](crate::outbox::record). Everything else (which sequence number
//! holds an id, each upstream's pending deliveries by due time and by age, its dead ones,
//! the claims) is kept in memory ([`index`]), built from the records at open, so a commit
//! writes one B-tree.
//!
//! Records are keyed by a sequence number given in queueing order (one more than the
//! highest in the file), not by their id: a delivery's id is a hash, and keyed by it each
//! insert of a group commit would dirty another leaf page of the tree, each one more page
//! to write and sync. In queueing order a commit's inserts land on the last page or two,
//! and deliveries settle roughly in that order too.
//!
//! Earlier layouts: an id-keyed `deliveries` table (before any release) is refused at
//! open rather than silently ignored; the `due:`, `age:` and `dead:` index tables of the
//! layout before this one are dropped at open (the records say the same).
//!
//! Claims are kept in memory only: this file has one process (redb locks it), and a
//! process that dies takes its claims with it, so after a restart every pending delivery
//! is due again (at least once).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::ReadTransaction;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::oneshot;

mod index;
mod queue;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use index::{Change as IndexChange, Memory, Place};
use tables::Tables;
use writer::{Inbox, Job};

use super::{DeliveryId, OutboxError};

pub(super) const RECORDS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("queue");
/// The id-keyed table of the layout before the sequence numbers (never released).
const OLD_RECORDS: &str = "deliveries";
/// The prefixes of the index tables the file had before the indexes moved to memory.
const OLD_INDEXES: [&str; 3] = ["due:", "age:", "dead:"];

pub(super) type RecordTable = redb::ReadOnlyTable<u64, &'static [u8]>;

/// The indexes and claims, shared by the handles and the writer. A std lock: held for
/// map work only, never across an await.
type Shared = Mutex<Memory>;

/// A cheap-clone handle on the embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// Commits made (each one fsync): group commit keeps this far below the changes.
    commits: Arc<AtomicU64>,
    /// Where changes wait for the writer thread.
    inbox: Arc<Inbox>,
    /// The indexes of what is committed, and the claims.
    memory: Arc<Shared>,
    path: PathBuf,
}

impl Drop for Inner {
    /// The last handle is gone: the writer answers what is waiting and lets go of the file.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

pub(super) fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Unavailable(e.into().to_string())
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox in the folder `path`, creating the folder if needed.
    /// A database left by a crash is recovered here, and the indexes are built from its
    /// records (one pass over them all, each decoded).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(path).map_err(|e| {
            OutboxError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let file = path.join("outbox.redb");
        let db = Database::create(&file).map_err(|e| {
            OutboxError::Unavailable(format!("cannot open {}: {e}", file.display()))
        })?;
        Self::with_db(db, file)
    }

    /// An outbox in memory, gone with the process: for `pollgate test`, whose durable
    /// events are queued (and never delivered) like in `serve`.
    pub fn in_memory() -> Result<Self, OutboxError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Self::with_db(db, PathBuf::from("(memory)"))
    }

    fn with_db(db: Database, file: PathBuf) -> Result<Self, OutboxError> {
        drop_old_indexes(&db, &file)?;
        let (memory, next_seq) = read_memory(&db)?;
        let memory = Arc::new(Mutex::new(memory));
        let db = Arc::new(db);
        let inbox = Arc::new(Inbox::new());
        let commits = Arc::new(AtomicU64::new(0));
        let writer = writer::Writer {
            db: db.clone(),
            inbox: inbox.clone(),
            commits: commits.clone(),
            memory: memory.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || writer.run(next_seq))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        inbox.set_writer(thread.thread().clone());
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                inbox,
                memory,
                path: file,
            }),
        })
    }

    /// Commits made so far (each one fsync).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.path
    }

    /// Applies `change` in the writer's next transaction; answers once it is synced.
    async fn write(
        &self,
        change: impl FnOnce(&mut Tables<'_>) -> Result<u64, OutboxError> + Send + 'static,
    ) -> Result<u64, OutboxError> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            change: Box::new(change),
            done,
        };
        if !self.inner.inbox.push(job) {
            return Err(OutboxError::Unavailable("the outbox writer stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(OutboxError::Unavailable("the outbox writer stopped".into())))
    }

    fn read(&self) -> Result<ReadTransaction, OutboxError> {
        self.inner.db.begin_read().map_err(storage)
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The sequence number holding `id`'s record, if it is committed.
    fn seq_of(&self, id: DeliveryId) -> Option<u64> {
        self.memory().seq_of(id)
    }

    /// Ends the claim on what was `seq` (looked up before the change that settled it).
    fn unclaim(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.memory().claims.remove(&seq);
        }
    }
}

/// Refuses a file of the id-keyed layout, and drops the index tables of the layout before
/// this one (their content is rebuilt from the records).
fn drop_old_indexes(db: &Database, file: &Path) -> Result<(), OutboxError> {
    let txn = db.begin_read().map_err(storage)?;
    let names: Vec<String> = txn
        .list_tables()
        .map_err(storage)?
        .map(|t| t.name().to_owned())
        .collect();
    drop(txn);
    if names.iter().any(|n| n == OLD_RECORDS) {
        return Err(OutboxError::Unavailable(format!(
            "{} has the outbox layout of an unreleased development build; move it away",
            file.display()
        )));
    }
    let old: Vec<&String> = names
        .iter()
        .filter(|n| OLD_INDEXES.iter().any(|p| n.starts_with(p)))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write().map_err(storage)?;
    for name in old {
        let table: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new(name);
        txn.delete_table(table).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// The indexes of the records in `db`, and the next sequence number.
fn read_memory(db: &Database) -> Result<(Memory, u64), OutboxError> {
    let txn = db.begin_read().map_err(storage)?;
    let records = match txn.open_table(RECORDS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Memory::default(), 0)),
        Err(e) => return Err(storage(e)),
    };
    let mut memory = Memory::default();
    let mut next = 0;
    for entry in records.iter().map_err(storage)? {
        let (seq, value) = entry.map_err(storage)?;
        let seq = seq.value();
        let d = tables::decode_record(seq, value.value())?;
        memory.apply(IndexChange::Put(d.id, Place::of(seq, &d)));
        next = seq + 1;
    }
    Ok((memory, next))
}
