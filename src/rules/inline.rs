//! Which threads may run a rule's first slice themselves (see `RuleEngine::run`).
//!
//! A slice of N operations can nest data at most N levels deeper than its input, so it
//! needs a stack of known size; Rust cannot ask a thread how large its stack is, so the
//! threads that have one say so: the gateway's runtime marks its worker threads with
//! [`mark_thread`] as they start (`pollgate serve` gives them [`WORKER_STACK`]). Any
//! other thread (a test's, an embedding program's) hands every rule to the pool.

use std::cell::Cell;

/// The stack of the gateway's worker threads: room for a slice at the default limits
/// (about 21 MiB), plus the HTTP stack below it. Reserved, not touched: only the pages a
/// call uses count as memory.
pub const WORKER_STACK: usize = 32 << 20;
/// Kept free below a slice for the code that calls it.
const BASE: usize = 1 << 20;

thread_local! {
    static STACK: Cell<usize> = const { Cell::new(0) };
}

/// Records that this thread's stack is `bytes` large (call it as the thread starts).
pub fn mark_thread(bytes: usize) {
    STACK.with(|s| s.set(bytes));
}

/// This thread's stack as marked, 0 when unknown.
pub(super) fn stack_bytes() -> usize {
    STACK.with(Cell::get)
}

/// The stack a slice of `operations` needs over input nested `input_levels` deep.
pub(super) fn needed(operations: u64, input_levels: usize, per_level: usize) -> usize {
    let levels = usize::try_from(operations)
        .unwrap_or(usize::MAX)
        .saturating_add(input_levels);
    levels.saturating_mul(per_level).saturating_add(BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_slice_fits_the_worker_stack() {
        // 1,000 operations over the event and replies (256) and a state of 32 levels.
        assert!(needed(1_000, 256 + 32, 16 * 1024) <= WORKER_STACK);
        assert!(needed(1_000, 256 + 100, 16 * 1024) <= WORKER_STACK);
    }

    #[test]
    fn unmarked_threads_have_no_known_stack() {
        std::thread::spawn(|| assert_eq!(stack_bytes(), 0))
            .join()
            .expect("the thread ran");
        std::thread::spawn(|| {
            mark_thread(WORKER_STACK);
            assert_eq!(stack_bytes(), WORKER_STACK);
        })
        .join()
        .expect("the thread ran");
    }
}
