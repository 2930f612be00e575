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

use fjall::{Database, Keyspace, PersistMode};

use super::tables::{apply, Tables};
use super::{storage, Shared};
use crate::outbox::OutboxError;

/// At most this many changes go into one batch.
pub(super) const MAX_BATCH: usize = 4096;
/// The writer commits when no change came for this long.
const GAP: Duration = Duration::from_micros(300);
/// ... and at the latest this long after the first change of the batch.
const MAX_LINGER: Duration = Duration::from_millis(2);

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
    pub(super) db: Database,
    pub(super) records: Keyspace,
    pub(super) inbox: Arc<Inbox>,
    pub(super) commits: Arc<AtomicU64>,
    pub(super) memory: Arc<Shared>,
    pub(super) failing: Arc<Mutex<Option<OutboxError>>>,
}

impl Writer {
    /// One batch and one commit for each batch of changes, until the inbox closes.
    pub(super) fn run(self, mut next_seq: u64) {
        let (mut want, mut changes) = (1, 0u64);
        while let Some(batch) = self.inbox.next_batch(want) {
            want = batch.len();
            changes += want as u64;
            next_seq = self.commit(batch, next_seq);
            let n = self.commits.load(Ordering::Relaxed);
            if n.is_multiple_of(1024) {
                let average = changes as f64 / n as f64;
                tracing::debug!(commits = n, average, "outbox group commits");
            }
        }
    }

    /// Applies and commits `batch`, then answers each change; the next sequence number.
    fn commit(&self, batch: Vec<Job>, mut next_seq: u64) -> u64 {
        let memory = &*self.memory;
        let writes = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut answers = Vec::with_capacity(batch.len());
        let staged = {
            let mut tables = Tables::new(&self.records, writes, memory, next_seq);
            for job in batch {
                answers.push(((job.change)(&mut tables), job.done));
            }
            tables.finish()
        };
        // Sequence numbers are never given twice, even when this batch is not committed.
        next_seq = staged.next_seq;
        // A change that failed inside the batch fails the whole batch: its half-made writes
        // must not be committed (dropping the batch writes nothing). The others' callers see
        // an error too and retry.
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err().cloned());
        let outcome = match failed {
            Some(error) => Err(error),
            None => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                let committed = staged.batch.commit().map_err(|e| match e {
                    // fjall refuses every write after one failed (a full disk, an I/O
                    // error) until the database is opened again.
                    fjall::Error::Poisoned => OutboxError::Unavailable(
                        "the outbox database stopped after a failed write; restart pollgate \
                         once the disk is writable"
                            .into(),
                    ),
                    e => storage(e),
                });
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
        next_seq
    }
}
