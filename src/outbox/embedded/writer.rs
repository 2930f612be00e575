//! The embedded outbox's writer thread and how changes reach it: group commit.
//!
//! Every change goes to one thread. It takes all the changes waiting, puts them in one
//! write batch and commits it once (one journal append and one `fdatasync`), then answers
//! each: a burst of concurrent calls costs one sync, not one each.
//!
//! Before it commits, the writer waits a little for more: a commit costs a sync and a
//! hundred microseconds of CPU or more whatever it holds, and the callers the last commit
//! answered usually come back with their next change within a millisecond. So it waits
//! until as many changes are waiting as the last commit answered, or until
//! [`GAP`] passed without a new one, or [`MAX_LINGER`] in all: a lone change after a quiet
//! spell waits [`GAP`] at most.
//!
//! Waking a thread costs a system call on both sides, and the writer is woken only when
//! it has something to do: by the change that finds the inbox empty (the writer may be
//! idle), and by the one that makes the batch as large as the writer wants. The changes
//! between are pushed without a wake-up; the writer picks them up when its timer ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use std::path::PathBuf;

use fjall::{Database, Keyspace, PersistMode};

use super::tables::{apply, Tables};
use super::{fjall_error, open_db, open_records, read_memory, Records, Shared};
use crate::outbox::OutboxError;

/// At most this many changes go into one batch.
pub(super) const MAX_BATCH: usize = 4096;
/// The writer commits when no change came for this long.
const GAP: Duration = Duration::from_micros(300);
/// ... and at the latest this long after the first change of the batch.
const MAX_LINGER: Duration = Duration::from_millis(2);
/// After a failed write the database is opened again before the next batch, at most this
/// often (each batch in between fails at once with the error).
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long a reopening waits for fjall's background thread to let go of the folder.
const UNLOCK_WAIT: Duration = Duration::from_secs(2);

/// One change, applied inside the writer's batch; its number is the answer
/// (a bool as 0 or 1, or a count).
pub(super) type Change = Box<dyn FnOnce(&mut Tables<'_>) -> Result<u64, OutboxError> + Send>;

pub(super) struct Job {
    pub(super) change: Change,
    pub(super) done: oneshot::Sender<Result<u64, OutboxError>>,
}

/// Where changes wait for the writer.
pub(super) struct Inbox {
    waiting: Mutex<Waiting>,
    closed: AtomicBool,
    writer: OnceLock<Thread>,
}

/// A std lock: held to push or take, never across an await.
struct Waiting {
    jobs: Vec<Job>,
    /// How many waiting changes wake the writer: 1 while it is idle, what its batch lacks
    /// while it lingers, none while it commits.
    need: usize,
}

impl Inbox {
    pub(super) fn new() -> Self {
        Self {
            waiting: Mutex::new(Waiting {
                jobs: Vec::new(),
                need: 1,
            }),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }

    /// Names the thread to wake.
    pub(super) fn set_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    /// Hands `job` to the writer; false once it stopped.
    pub(super) fn push(&self, job: Job) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let wake = {
            let mut waiting = self.lock();
            waiting.jobs.push(job);
            waiting.jobs.len() >= waiting.need
        };
        if wake {
            self.wake();
        }
        true
    }

    /// Stops the writer once it answered what is waiting (the outbox's last handle is
    /// gone).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves what is waiting into `batch` (up to [`MAX_BATCH`] in all), and asks to be
    /// woken when the batch could have `want`; how many came.
    fn take(&self, batch: &mut Vec<Job>, want: usize) -> usize {
        let mut waiting = self.lock();
        let n = waiting
            .jobs
            .len()
            .min(MAX_BATCH.saturating_sub(batch.len()));
        batch.extend(waiting.jobs.drain(..n));
        waiting.need = want.saturating_sub(batch.len()).max(1);
        n
    }

    /// The next batch: waits for a first change, then lingers for more (see the module's
    /// comment); `want` is the last batch's size. `None` once the inbox is closed and
    /// empty.
    pub(super) fn next_batch(&self, want: usize) -> Option<Vec<Job>> {
        let mut batch = Vec::new();
        while self.take(&mut batch, 1) == 0 {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            std::thread::park();
        }
        let want = want.min(MAX_BATCH);
        let first = Instant::now();
        let mut last = first;
        while batch.len() < want && !self.closed.load(Ordering::Acquire) {
            let now = Instant::now();
            let until = (last + GAP).min(first + MAX_LINGER);
            if now >= until {
                break;
            }
            std::thread::park_timeout(until - now);
            if self.take(&mut batch, want) > 0 {
                last = Instant::now();
            }
        }
        // Committing: what comes now waits for the next batch without waking anyone.
        self.lock().need = usize::MAX;
        Some(batch)
    }
}

/// The writer thread's handles.
pub(super) struct Writer {
    /// The database; `None` only while it is opened again.
    pub(super) db: Option<Database>,
    /// Its folder, to open it again after a failed write (`None`: a temporary database,
    /// deleted when closed, so never opened again).
    pub(super) folder: Option<PathBuf>,
    /// When it was last opened again.
    pub(super) reopened: Option<Instant>,
    pub(super) records: Records,
    pub(super) inbox: Arc<Inbox>,
    pub(super) commits: Arc<AtomicU64>,
    pub(super) memory: Arc<Shared>,
    /// The last commit's error, until one succeeds; while it is there the database is
    /// opened again before the next batch.
    pub(super) failing: Arc<Mutex<Option<OutboxError>>>,
}

impl Writer {
    /// One batch and one commit for each batch of changes, until the inbox closes.
    pub(super) fn run(mut self, mut next_seq: u64) {
        let (mut want, mut changes) = (1, 0u64);
        while let Some(batch) = self.inbox.next_batch(want) {
            want = batch.len();
            changes += want as u64;
            self.commit(batch, &mut next_seq);
            let n = self.commits.load(Ordering::Relaxed);
            if n.is_multiple_of(1024) {
                let average = changes as f64 / n as f64;
                tracing::debug!(commits = n, average, "outbox group commits");
            }
        }
    }

    fn failing(&self) -> Option<OutboxError> {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies and commits `batch`, then answers each change.
    fn commit(&mut self, batch: Vec<Job>, next_seq: &mut u64) {
        let usable = match self.failing() {
            None => self.records.get().and_then(|r| Ok((r, self.database()?))),
            Some(error) => self.reopen(next_seq).map_err(|e| {
                tracing::debug!(error = %e, "the outbox database cannot be opened again yet");
                error
            }),
        };
        let (records, db) = match usable {
            Ok(handles) => handles,
            Err(error) => {
                for job in batch {
                    let _ = job.done.send(Err(error.clone()));
                }
                return;
            }
        };
        let memory = &*self.memory;
        let writes = db.batch().durability(Some(PersistMode::SyncData));
        let mut answers = Vec::with_capacity(batch.len());
        let staged = {
            let mut tables = Tables::new(&records, writes, memory, *next_seq);
            for job in batch {
                answers.push(((job.change)(&mut tables), job.done));
            }
            tables.finish()
        };
        // Sequence numbers are never given twice, even when this batch is not committed.
        *next_seq = staged.next_seq;
        // A change that failed inside the batch fails the whole batch: its half-made writes
        // must not be committed (dropping the batch writes nothing). The others' callers see
        // an error too and retry.
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err().cloned());
        let outcome = match failed {
            Some(error) => Err(error),
            None => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                let committed = staged.batch.commit().map_err(fjall_error);
                match &committed {
                    Ok(()) => apply(staged.changes, memory),
                    Err(e) => tracing::error!(error = %e, "outbox commit failed"),
                }
                *self.failing.lock().unwrap_or_else(PoisonError::into_inner) =
                    committed.as_ref().err().cloned();
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

    fn database(&self) -> Result<Database, OutboxError> {
        self.db
            .clone()
            .ok_or_else(|| OutboxError::Unavailable("the outbox database is closed".into()))
    }

    /// Opens the database again after a failed write: fjall refuses every write after one
    /// failed (a full disk, an I/O error) until then. The indexes are built again from the
    /// records (a batch whose sync failed may be there after all); the claims are kept, so
    /// a delivery on its way is not sent twice.
    fn reopen(&mut self, next_seq: &mut u64) -> Result<(Keyspace, Database), OutboxError> {
        let Some(folder) = self.folder.clone() else {
            return Err(OutboxError::Unavailable(
                "the temporary outbox database failed a write".into(),
            ));
        };
        if self.reopened.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
            return Err(OutboxError::Unavailable(
                "waiting to reopen the outbox database".into(),
            ));
        }
        self.reopened = Some(Instant::now());
        // Every handle goes first: the folder's lock is let go with the last.
        self.records.set(None);
        self.db = None;
        let deadline = Instant::now() + UNLOCK_WAIT;
        let db = loop {
            match open_db(&folder, false) {
                Ok(db) => break db,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let records = open_records(&db)?;
        let (fresh, next) = read_memory(&records)?;
        {
            let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            let claims = std::mem::take(&mut memory.claims);
            *memory = fresh;
            memory.claims = claims;
        }
        *next_seq = (*next_seq).max(next);
        self.db = Some(db.clone());
        self.records.set(Some(records.clone()));
        tracing::warn!(folder = %folder.display(), "opened the outbox database again after a failed write");
        Ok((records, db))
    }
}
