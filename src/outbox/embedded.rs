//! The memory store's outbox: a [fjall](https://docs.rs/fjall) database in
//! `outbox.path/queue`, every commit written to its journal and synced (`fdatasync`), so a
//! queued delivery survives `kill -9` and power loss once [`Outbox::enqueue`] returned.
//!
//! # Group commit
//!
//! Every change goes to one writer thread ([`writer`]), which puts a batch of them in one
//! fjall write batch and commits it once (one journal append, one sync), then answers
//! each: a burst of concurrent calls costs one sync, not one each. Reads (claims, listings,
//! counts) use the indexes in memory and point reads beside it, and never wait for the
//! writer.
//!
//! Why fjall: a commit here is an append to a journal and one `fdatasync`, which costs
//! about what the sync alone costs. The redb file of earlier versions rewrote a dozen
//! B-tree pages in place at every commit (a leaf, its branches, the allocator's state),
//! twice the CPU per commit (README, "Durable delivery").
//!
//! # One keyspace
//!
//! The database holds one keyspace, `queue`: sequence number (8 bytes, big-endian, so keys
//! sort in queueing order) → id (16 bytes), then [`record::encode`](crate::outbox::record).
//! Everything else (which sequence number holds an id, each upstream's pending deliveries
//! by due time and by age, its dead ones, the claims) is kept in memory ([`index`]), built
//! from the records at open, so a commit writes the records only.
//!
//! Records are keyed by a sequence number given in queueing order (one more than the
//! highest stored), not by their id, so the listing order survives a restart.
//!
//! An `outbox.redb` file left in `outbox.path` by an earlier version is imported at open
//! ([`legacy`]) and renamed `outbox.redb.imported`: nothing queued is lost by the upgrade.
//!
//! Claims are kept in memory only: the database has one process (fjall locks its folder),
//! and a process that dies takes its claims with it, so after a restart every pending
//! delivery is due again (at least once).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tokio::sync::oneshot;

mod index;
mod legacy;
mod queue;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use index::{Change as IndexChange, Memory, Place};
use tables::Tables;
use writer::{Inbox, Job};

use super::{DeliveryId, OutboxError};

/// The keyspace of the records.
const RECORDS: &str = "queue";
/// The folder under `outbox.path` that holds the database.
pub(super) const FOLDER: &str = "queue";
/// fjall's block cache. Pending deliveries are read back once or twice (claimed, then
/// settled), mostly from the memtable; the cache only serves a backlog that was flushed.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// The memtable: records (and the tombstones of settled ones) stay in memory until this
/// much is written, then go to a table file. fjall's 64 MiB would be resident for good.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// The journals on disk before the memtables are flushed: fjall's smallest.
const JOURNALS_BYTES: u64 = 64 * 1024 * 1024;

/// The indexes and claims, shared by the handles and the writer. A std lock: held for
/// map work only, never across an await.
type Shared = Mutex<Memory>;

/// A cheap-clone handle on the embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    records: Records,
    /// Commits made (each one sync): group commit keeps this far below the changes.
    commits: Arc<AtomicU64>,
    /// Where changes wait for the writer thread.
    inbox: Arc<Inbox>,
    /// The writer thread, joined when the last handle goes (it holds the database).
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The indexes of what is committed, and the claims.
    memory: Arc<Shared>,
    /// The last commit's error, until a commit succeeds again: what `ping` reports.
    failing: Arc<Mutex<Option<OutboxError>>>,
}

impl Drop for Inner {
    /// The last handle is gone: the writer answers what is waiting and lets go of the
    /// database, which syncs its journal as it closes (and deletes a temporary one). Waited
    /// for, so the database is closed before the process goes on (or exits).
    fn drop(&mut self) {
        self.inbox.close();
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(thread) = writer.take() {
            let _ = thread.join();
        }
    }
}

/// A fjall error as a user reads it. fjall shows its errors as `FjallError: Io(Os { code:
/// 28, .. })`; an I/O error underneath is said as the OS says it ("No space left on device
/// (os error 28)").
fn reason(e: &fjall::Error) -> String {
    match e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => io.to_string(),
        fjall::Error::Poisoned => "an earlier write failed".into(),
        fjall::Error::Locked => "the folder is in use by another process".into(),
        e => format!("{e:?}"),
    }
}

/// For `map_err`, which hands the error over.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn fjall_error(e: fjall::Error) -> OutboxError {
    OutboxError::Unavailable(reason(&e))
}

/// The records' keyspace, shared by the handles and the writer, which opens the database
/// again after a failed write (fjall refuses every write after one failed): `None` while it
/// does.
#[derive(Clone)]
pub(super) struct Records(Arc<RwLock<Option<Keyspace>>>);

impl Records {
    fn new(records: Keyspace) -> Self {
        Self(Arc::new(RwLock::new(Some(records))))
    }

    /// The keyspace now (a cheap handle).
    pub(super) fn get(&self) -> Result<Keyspace, OutboxError> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| OutboxError::Unavailable("the outbox database is being reopened".into()))
    }

    pub(super) fn set(&self, records: Option<Keyspace>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = records;
    }
}

/// A record's key: its sequence number, big-endian.
pub(super) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox in the folder `path`, creating the folder if needed.
    /// A database left by a crash is recovered here (fjall replays its journal), an
    /// `outbox.redb` of an earlier version is imported, and the indexes are built from the
    /// records (one pass over them all, each decoded).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(path).map_err(|e| {
            OutboxError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let db = open_db(&path.join(FOLDER), false)?;
        Self::with_db(db, Some(path))
    }

    /// An outbox in a temporary folder, deleted with it: for `pollgate test`, whose durable
    /// events are queued (and never delivered) like in `serve`.
    pub fn in_memory() -> Result<Self, OutboxError> {
        let folder = std::env::temp_dir().join(format!(
            "pollgate-outbox-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        Self::with_db(open_db(&folder, true)?, None)
    }

    /// `dir` is `outbox.path` for a database on disk (`None`: a temporary one, which is
    /// never opened again).
    fn with_db(db: Database, dir: Option<&Path>) -> Result<Self, OutboxError> {
        let records = open_records(&db)?;
        let (mut memory, mut next_seq) = read_memory(&records)?;
        if let Some(dir) = dir {
            legacy::import(dir, &db, &records, &mut memory, &mut next_seq)?;
        }
        let records = Records::new(records);
        let memory = Arc::new(Mutex::new(memory));
        let inbox = Arc::new(Inbox::new());
        let commits = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(Mutex::new(None));
        let writer = writer::Writer {
            db: Some(db),
            folder: dir.map(|dir| dir.join(FOLDER)),
            reopened: None,
            records: records.clone(),
            inbox: inbox.clone(),
            commits: commits.clone(),
            memory: memory.clone(),
            failing: failing.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || writer.run(next_seq))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        inbox.set_writer(thread.thread().clone());
        Ok(Self {
            inner: Arc::new(Inner {
                records,
                commits,
                inbox,
                writer: Mutex::new(Some(thread)),
                memory,
                failing,
            }),
        })
    }

    /// Commits made so far (each one sync).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Applies `change` in the writer's next batch; answers once it is synced.
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

/// Opens the database in `folder`; a temporary one is deleted when it is closed.
fn open_db(folder: &Path, temporary: bool) -> Result<Database, OutboxError> {
    builder(folder).temporary(temporary).open().map_err(|e| {
        OutboxError::Unavailable(format!("cannot open {}: {}", folder.display(), reason(&e)))
    })
}

/// The records' keyspace in `db`.
fn open_records(db: &Database) -> Result<Keyspace, OutboxError> {
    db.keyspace(RECORDS, || {
        KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
    })
    .map_err(fjall_error)
}

/// The database's settings: one background thread (flushes and compactions of a queue
/// are small), a small block cache, the smallest journals.
fn builder(folder: &Path) -> fjall::DatabaseBuilder<Database> {
    Database::builder(folder)
        .cache_size(CACHE_BYTES)
        .max_journaling_size(JOURNALS_BYTES)
        .worker_threads(1)
}

/// The indexes of the records in `records`, and the next sequence number.
fn read_memory(records: &Keyspace) -> Result<(Memory, u64), OutboxError> {
    let mut memory = Memory::default();
    let mut next = 0;
    for entry in records.iter() {
        let (k, value) = entry.into_inner().map_err(fjall_error)?;
        let seq = <[u8; 8]>::try_from(&k[..])
            .map(u64::from_be_bytes)
            .map_err(|_| OutboxError::Corrupt(format!("a record key of {} bytes", k.len())))?;
        let d = tables::decode_record(seq, &value)?;
        memory.apply(IndexChange::Put(d.id, Place::of(seq, &d)));
        next = seq + 1;
    }
    Ok((memory, next))
}
