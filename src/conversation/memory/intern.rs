//! Values many conversations share (their origin, their last decision's messages), kept
//! once per shard: a million conversations of a few tills and a few messages hold a few
//! hundred copies, not a million (GATEWAY.md 7: under 512 B per live conversation).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// A shard keeps at most this many values of a kind; beyond, a value no conversation
/// holds any more makes room, else a new value is not kept (it is still handed out).
/// Bounded, so signed calls with ever-new values cannot grow it.
const KEPT: usize = 128;

pub(super) struct Interner<T> {
    kept: HashSet<Arc<T>>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            kept: HashSet::new(),
        }
    }
}

impl<T: Eq + Hash> Interner<T> {
    /// The shared copy of `value`.
    pub(super) fn intern(&mut self, value: T) -> Arc<T> {
        if let Some(kept) = self.kept.get(&value) {
            return Arc::clone(kept);
        }
        let value = Arc::new(value);
        if self.kept.len() >= KEPT {
            self.kept.retain(|v| Arc::strong_count(v) > 1);
        }
        if self.kept.len() < KEPT {
            self.kept.insert(Arc::clone(&value));
        }
        value
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let mut names = Interner::default();
        let a = names.intern("addSessionLine".to_owned());
        let b = names.intern("addSessionLine".to_owned());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn at_the_bound_unheld_values_make_room_and_held_ones_stay() {
        let mut names = Interner::default();
        let held: Vec<Arc<String>> = (0..KEPT / 2).map(|i| names.intern(i.to_string())).collect();
        for i in KEPT / 2..KEPT {
            names.intern(i.to_string()); // dropped at once: only the interner holds it
        }
        assert_eq!(names.len(), KEPT);
        let fresh = names.intern("fresh".to_owned());
        assert_eq!(names.len(), KEPT / 2 + 1, "the unheld half made room");
        assert!(Arc::ptr_eq(&fresh, &names.intern("fresh".to_owned())));
        assert!(Arc::ptr_eq(&held[0], &names.intern("0".to_owned())));
    }

    #[test]
    fn when_every_kept_value_is_held_a_new_one_is_handed_out_but_not_kept() {
        let mut names = Interner::default();
        let _held: Vec<Arc<String>> = (0..KEPT).map(|i| names.intern(i.to_string())).collect();
        let a = names.intern("new".to_owned());
        let b = names.intern("new".to_owned());
        assert_eq!(*a, "new");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(names.len(), KEPT);
    }
}
