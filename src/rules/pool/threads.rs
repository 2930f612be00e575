//! The pool's threads: workers that run jobs, and the watchdog that answers overdue ones.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::{lock, Job, Running, Shared, State};

pub(super) fn spawn_worker(shared: &Arc<Shared>, state: &mut State) -> std::io::Result<()> {
    let mine = shared.clone();
    std::thread::Builder::new()
        .name("pollgate-rule".into())
        .stack_size(shared.size.stack_bytes)
        .spawn(move || worker(&mine))?;
    state.threads += 1;
    Ok(())
}

pub(super) fn spawn_watchdog(shared: &Arc<Shared>) -> std::io::Result<()> {
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
        abandon_overdue(shared, &mut state, now);
    }
}

/// Answers every job past its deadline with [`super::Overrun`] and, while under the thread
/// cap, starts a thread in place of each busy one.
fn abandon_overdue(shared: &Arc<Shared>, state: &mut State, now: Instant) {
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
            if let Err(e) = spawn_worker(shared, state) {
                tracing::error!("cannot start a rule thread: {e}");
            }
        }
    }
}
