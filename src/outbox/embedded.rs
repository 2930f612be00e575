//! The memory store's outbox: a redb database in `outbox.path` (one file,
//! `outbox.redb`), ACID with an fsync on every commit, so a queued delivery survives
//! `kill -9` and power loss once [`Outbox::enqueue`] returned.
//!
//! # Group commit
//!
//! Every change goes to one writer thread. It takes all the changes waiting at that
//! moment, applies them in one write transaction and commits it once (one fsync), then
//! answers each: a burst of concurrent calls costs one sync, not one each. Reads (claims,
//! listings, counts) use read transactions beside it and never wait for the writer.
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
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};

use redb::ReadTransaction;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::oneshot;

mod index;
mod queue;
mod tables;
#[cfg(test)]
mod tests;

use index::{Change as IndexChange, Memory, Place};
use tables::Tables;

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

/// At most this many changes go into one transaction.
const MAX_BATCH: usize = 4096;
/// After the changes waiting, the writer waits this long for more before it commits, and
/// again while more keep coming (up to [`MAX_LINGER`]): a commit costs an fsync and most of
/// a millisecond of CPU, so the calls answered by the last commit, which come back with
/// their next changes within a few hundred microseconds, are worth waiting for.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
const MAX_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// One change, applied inside the writer's transaction; its number is the answer
/// (a bool as 0 or 1, or a count).
type Change = Box<dyn FnOnce(&mut Tables<'_>) -> Result<u64, OutboxError> + Send>;

struct Job {
    change: Change,
    done: oneshot::Sender<Result<u64, OutboxError>>,
}

/// A cheap-clone handle on the embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// Commits made (each one fsync): group commit keeps this far below the changes.
    commits: Arc<AtomicU64>,
    writer: Mutex<mpsc::Sender<Job>>,
    /// The indexes of what is committed, and the claims.
    memory: Arc<Shared>,
    path: PathBuf,
}

pub(super) fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Unavailable(e.into().to_string())
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox in the folder `path`, creating the folder if needed.
    /// A database left by a crash is recovered here, and the indexes are built from its
    /// records (a pass over them all: about a second a million on this project's bench VM).
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
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let writer_memory = memory.clone();
        std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || write_loop(&writer_db, &rx, &counted, &writer_memory, next_seq))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                writer: Mutex::new(tx),
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
        let sent = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
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

/// The changes for one transaction: `first`, everything waiting, and what comes while the
/// writer lingers.
fn gather(first: Job, jobs: &mpsc::Receiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    let until = std::time::Instant::now() + MAX_LINGER;
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match jobs.recv_timeout(LINGER.min(left)) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
    }
    batch
}

/// The writer thread: one transaction and one commit for everything waiting.
fn write_loop(
    db: &Database,
    jobs: &mpsc::Receiver<Job>,
    commits: &AtomicU64,
    memory: &Shared,
    mut next_seq: u64,
) {
    while let Ok(first) = jobs.recv() {
        let batch = gather(first, jobs);
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let error = storage(e);
                for job in batch {
                    let _ = job.done.send(Err(error.clone()));
                }
                continue;
            }
        };
        let mut answers = Vec::with_capacity(batch.len());
        let staged = {
            let mut tables = Tables::new(&txn, memory, next_seq);
            for job in batch {
                answers.push(((job.change)(&mut tables), job.done));
            }
            tables.finish()
        };
        // Sequence numbers are never given twice, even when this batch is not committed.
        next_seq = staged.next_seq;
        // A change that failed inside the transaction fails the whole batch: its half-made
        // writes must not be committed. The others' callers see an error too and retry.
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err().cloned());
        let outcome = match failed {
            Some(error) => {
                let _ = txn.abort();
                Err(error)
            }
            None => {
                let n = commits.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1024) {
                    tracing::debug!(commits = n, batch = answers.len(), "outbox group commit");
                }
                let committed = txn.commit().map_err(storage);
                if committed.is_ok() {
                    staged.apply(memory);
                }
                committed
            }
        };
        for (answer, done) in answers {
            let _ = done.send(match &outcome {
                Ok(()) => answer,
                Err(e) => Err(e.clone()),
            });
        }
    }
}
