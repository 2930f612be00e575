//! The threads rules run on (GATEWAY.md 12).
//!
//! Rules never run on the threads that serve HTTP: a rule that spins until its limits stop
//! it must not delay `/healthz` or another till's call. The pool's threads have stacks
//! sized for the deepest data the size limits allow (Rhai compares, prints and drops nested
//! arrays and maps recursively), so no rule can overflow a stack and abort the process.
//!
//! Rhai checks the limits between operations only; a native function working on large data
//! (an equality of two deep arrays, say) runs to its end first. So a watchdog answers a
//! call whose evaluation overran its budget with [`Overrun`] and, while under the thread
//! cap, starts a fresh thread in place of the busy one, which ends once its evaluation does.
//! Everything an evaluation made is dropped on the thread that made it.
//!
//! The locks are std mutexes: they guard a queue and a list for a few instructions and are
//! never held across an `.await` or while a job runs.

mod threads;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use threads::{spawn_watchdog, spawn_worker};

/// An evaluation that did not end within its budget; the caller answers fail-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

/// How many threads run rules, and how large their stacks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub threads: usize,
    pub stack_bytes: usize,
}

/// A bounded pool of rule threads with a watchdog. Threads start on first use and end when
/// the pool is dropped (after the jobs already queued).
pub struct RulePool {
    shared: Arc<Shared>,
}

type Task = Box<dyn FnOnce() + Send>;

struct Job {
    run: Task,
    /// Answers the caller with [`Overrun`] if it has not been answered yet.
    abandon: Task,
}

struct Running {
    id: u64,
    deadline: Instant,
    abandon: Task,
}

struct Shared {
    state: Mutex<State>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// The watchdog waits here for the next deadline.
    watch: Condvar,
    size: PoolSize,
    /// How long a job may run before its caller is answered [`Overrun`].
    budget: Duration,
    /// Threads in all, busy-abandoned ones included: the bound on replacements.
    max_threads: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    running: Vec<Running>,
    threads: usize,
    /// Workers waiting for a job: a submit wakes one only when there is one.
    idle: usize,
    /// The watchdog waits without a timeout (nothing ran for a while): a job starting must
    /// wake it. Otherwise it looks again within one budget by itself, and a busy pool costs
    /// the watchdog no wake-ups.
    watchdog_asleep: bool,
    /// Some job started since the watchdog last looked.
    started_since: bool,
    started: bool,
    next_id: u64,
    closed: bool,
}

impl RulePool {
    /// A pool whose jobs may each run for `budget`.
    pub fn new(size: PoolSize, budget: Duration) -> Self {
        let size = PoolSize {
            threads: size.threads.max(1),
            ..size
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                watch: Condvar::new(),
                max_threads: size.threads * 4,
                size,
                budget,
            }),
        }
    }

    pub fn size(&self) -> PoolSize {
        self.shared.size
    }

    /// Whether any job was ever handed to the pool (its threads start then).
    pub fn started(&self) -> bool {
        lock(&self.shared.state).started
    }

    /// Runs `f` on a rule thread. The answer is `Err(Overrun)` when `f` has not returned
    /// within the pool's budget of starting (or the pool could not start a thread). If the
    /// caller goes away before `f` starts, `f` never runs.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Overrun>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, Overrun>>();
        let slot = Arc::new(Mutex::new(Some(tx)));
        let theirs = slot.clone();
        let run: Task = Box::new(move || {
            if lock(&theirs)
                .as_ref()
                .is_none_or(oneshot::Sender::is_closed)
            {
                return;
            }
            let value = f();
            // Taken under the lock, sent after it: a value that is not wanted any more is
            // dropped here, on the thread (and stack) that built it.
            let tx = lock(&theirs).take();
            if let Some(tx) = tx {
                let _ = tx.send(Ok(value));
            }
        });
        let abandon: Task = Box::new(move || {
            let tx = lock(&slot).take();
            if let Some(tx) = tx {
                let _ = tx.send(Err(Overrun));
            }
        });
        self.submit(Job { run, abandon });
        rx.await.unwrap_or(Err(Overrun))
    }

    fn submit(&self, job: Job) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if !state.started {
            state.started = true;
            if let Err(e) = spawn_watchdog(shared) {
                tracing::error!("cannot start the rule watchdog thread: {e}");
            }
            for _ in 0..shared.size.threads {
                if let Err(e) = spawn_worker(shared, &mut state) {
                    tracing::error!("cannot start a rule thread: {e}");
                }
            }
        }
        if state.threads == 0 {
            // Dropping the job drops its reply: the caller gets Overrun, never a hang.
            return;
        }
        state.queue.push_back(job);
        let wake = state.idle > 0;
        drop(state);
        if wake {
            shared.work.notify_one();
        }
    }
}

impl Drop for RulePool {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (plain pushes and pops).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
