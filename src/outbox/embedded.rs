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
//! # Tables
//!
//! | table          | key                      | value                    |
//! |----------------|--------------------------|--------------------------|
//! | `deliveries`   | id (16 bytes)            | [`record::encode`]       |
//! | `due/{U}`      | (next attempt ms, id)    | () — pending, by due time |
//! | `age/{U}`      | (queued ms, id)          | () — pending, by age     |
//! | `dead/{U}`     | (queued ms, id)          | () — dead                |
//!
//! One set of index tables per upstream `U`, so counts are a table's length and the
//! oldest pending delivery its first entry.
//!
//! Claims are kept in memory only: this file has one process (redb locks it), and a
//! process that dies takes its claims with it, so after a restart every pending delivery
//! is due again (at least once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use redb::ReadTransaction;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

mod queue;
mod tables;

use tables::Tables;

use super::{DeliveryId, OutboxError};

pub(super) const DELIVERIES: TableDefinition<'static, &[u8], &[u8]> =
    TableDefinition::new("deliveries");

pub(super) type Index<'a> = TableDefinition<'a, (u64, &'static [u8]), ()>;
pub(super) type IndexTable = redb::ReadOnlyTable<(u64, &'static [u8]), ()>;
pub(super) type RecordTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

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
    /// Claimed deliveries and when their claim ends. A std lock: held for map updates
    /// only, never across an await.
    claims: Mutex<HashMap<DeliveryId, u64>>,
    path: PathBuf,
}

pub(super) fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Unavailable(e.into().to_string())
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox in the folder `path`, creating the folder if needed.
    /// A database left by a crash is recovered here.
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
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || write_loop(&writer_db, &rx, &counted))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                writer: Mutex::new(tx),
                claims: Mutex::default(),
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

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, u64>> {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unclaim(&self, id: DeliveryId) {
        self.claims().remove(&id);
    }
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
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>, commits: &AtomicU64) {
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
        {
            let mut tables = Tables::new(&txn);
            for job in batch {
                answers.push(((job.change)(&mut tables), job.done));
            }
        }
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
                txn.commit().map_err(storage)
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
