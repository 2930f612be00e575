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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

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

fn spawn_worker(shared: &Arc<Shared>, state: &mut State) -> std::io::Result<()> {
    let mine = shared.clone();
    std::thread::Builder::new()
        .name("pollgate-rule".into())
        .stack_size(shared.size.stack_bytes)
        .spawn(move || worker(&mine))?;
    state.threads += 1;
    Ok(())
}

fn spawn_watchdog(shared: &Arc<Shared>) -> std::io::Result<()> {
    let mine = shared.clone();
    std::thread::Builder::new()
        .name("pollgate-rule-watchdog".into())
        .spawn(move || watchdog(&mine, mine.budget))?;
    Ok(())
}

fn worker(shared: &Shared) {
    loop {
        let mut state = lock(&shared.state);
        let job = loop {
            if let Some(job) = state.queue.pop_front() {
                break job;
            }
            if state.closed {
                state.threads -= 1;
                return;
            }
            state.idle += 1;
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        };
        let id = state.next_id;
        state.next_id += 1;
        let Job { run, abandon } = job;
        state.running.push(Running {
            id,
            deadline: Instant::now() + shared.budget,
            abandon,
        });
        state.started_since = true;
        let wake = std::mem::take(&mut state.watchdog_asleep);
        drop(state);
        if wake {
            shared.watch.notify_one();
        }

        run();

        let mut state = lock(&shared.state);
        match state.running.iter().position(|r| r.id == id) {
            Some(at) => {
                state.running.swap_remove(at);
            }
            None => {
                // The watchdog gave up on this job and started a thread in this one's place.
                state.threads -= 1;
                return;
            }
        }
    }
}

fn watchdog(shared: &Arc<Shared>, budget: Duration) {
    let mut state = lock(&shared.state);
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        let Some(next) = state.running.iter().map(|r| r.deadline).min() else {
            if std::mem::take(&mut state.started_since) {
                // Jobs are coming: look again within a budget, so that each job need not
                // wake this thread (a job started now is due no sooner than that).
                state = shared
                    .watch
                    .wait_timeout(state, budget)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            } else {
                state.watchdog_asleep = true;
                state = shared
                    .watch
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            continue;
        };
        if next > now {
            state = shared
                .watch
                .wait_timeout(state, next - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue;
        }
        let mut overdue = Vec::new();
        let mut at = 0;
        while at < state.running.len() {
            if state.running[at].deadline <= now {
                overdue.push(state.running.swap_remove(at));
            } else {
                at += 1;
            }
        }
        for running in overdue {
            (running.abandon)();
            tracing::warn!(
                "a rule evaluation overran its time limit inside a native function; its call was answered fail-safe"
            );
            // The busy thread leaves when its job ends; keep the pool's capacity meanwhile.
            if state.threads < shared.max_threads {
                if let Err(e) = spawn_worker(shared, &mut state) {
                    tracing::error!("cannot start a rule thread: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize, budget: Duration) -> RulePool {
        RulePool::new(
            PoolSize {
                threads,
                stack_bytes: 1 << 20,
            },
            budget,
        )
    }

    #[tokio::test]
    async fn runs_jobs_on_threads_of_its_own() {
        let pool = pool(2, Duration::from_secs(5));
        let here = std::thread::current().id();
        let name = pool
            .run(move || {
                assert_ne!(std::thread::current().id(), here);
                std::thread::current().name().map(str::to_owned)
            })
            .await;
        assert_eq!(name, Ok(Some("pollgate-rule".to_owned())));
    }

    #[tokio::test]
    async fn a_job_past_its_budget_is_answered_overrun_and_the_pool_keeps_serving() {
        let pool = pool(1, Duration::from_millis(30));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let stuck = pool
            .run(move || {
                let _ = held.recv_timeout(Duration::from_secs(10));
            })
            .await;
        assert_eq!(stuck, Err(Overrun));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The only thread is still busy with the stuck job; a replacement serves this one.
        assert_eq!(pool.run(|| 7).await, Ok(7));
        release.send(()).expect("the stuck job is still waiting");
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_before_it_started_never_runs() {
        let pool = Arc::new(pool(1, Duration::from_secs(10)));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let first = pool.clone();
        let busy = tokio::spawn(async move {
            first
                .run(move || {
                    let _ = held.recv_timeout(Duration::from_secs(10));
                })
                .await
        });
        // Wait until the first job occupies the only thread.
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&pool.shared.state).running.is_empty() {
            assert!(Instant::now() < deadline, "the first job never started");
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let gone = pool.run(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Polled once (queued), then dropped: the caller went away.
        let _ = tokio::time::timeout(Duration::from_millis(1), gone).await;
        release.send(()).expect("the first job is waiting");
        assert_eq!(busy.await.expect("joined"), Ok(()));
        // A later job on the same thread runs after the abandoned one would have.
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_job_overrunning_right_after_another_is_still_caught() {
        // The first job leaves the watchdog looking once a budget without being woken;
        // the second must still be answered once its own budget is spent.
        let pool = pool(1, Duration::from_millis(30));
        assert_eq!(pool.run(|| 1).await, Ok(1));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let stuck = pool
            .run(move || {
                let _ = held.recv_timeout(Duration::from_secs(10));
            })
            .await;
        assert_eq!(stuck, Err(Overrun));
        release.send(()).expect("the stuck job is still waiting");
    }
}
