//! The parts of a body a call needs built: what its rule reads, what its conversation key
//! and the error check read. Everything else is checked as JSON and skipped, not built: a
//! till's body carries the whole session (every line, every payment) while a rule usually
//! reads a few fields, and building, freezing and dropping the rest was a third of a call's
//! own work.

use std::collections::BTreeMap;

/// Which parts of a JSON value to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The whole value.
    All,
    /// When the value is an object, only these keys (each with what of it is wanted); any
    /// other value whole.
    Fields(BTreeMap<String, Wanted>),
}

impl Wanted {
    /// Nothing of an object (any other value whole).
    pub fn none() -> Self {
        Self::Fields(BTreeMap::new())
    }

    /// The value at `path`, whole (the empty path: all of it).
    pub fn path<S: AsRef<str>>(path: &[S]) -> Self {
        path.iter().rev().fold(Self::All, |inner, key| {
            Self::Fields(BTreeMap::from([(key.as_ref().to_owned(), inner)]))
        })
    }

    /// Everything `self` or `other` wants.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::Fields(mut mine), Self::Fields(theirs)) => {
                for (key, wanted) in theirs {
                    let merged = match mine.remove(&key) {
                        Some(have) => have.union(wanted),
                        None => wanted,
                    };
                    mine.insert(key, merged);
                }
                Self::Fields(mine)
            }
            _ => Self::All,
        }
    }

    /// What is wanted of the value under `key` of an object; `None`: skip it.
    pub(super) fn field(&self, key: &str) -> Option<&Self> {
        match self {
            Self::All => Some(self),
            Self::Fields(fields) => fields.get(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_fields_and_all_wins() {
        let a = Wanted::path(&["event", "eventCounter"]);
        let b = Wanted::path(&["event", "eventBlocking"]).union(Wanted::path(&["dialog"]));
        let both = a.clone().union(b);
        let Wanted::Fields(top) = &both else {
            panic!("fields")
        };
        assert_eq!(top.keys().collect::<Vec<_>>(), ["dialog", "event"]);
        assert_eq!(top["dialog"], Wanted::All);
        let Wanted::Fields(event) = &top["event"] else {
            panic!("fields")
        };
        assert_eq!(
            event.keys().collect::<Vec<_>>(),
            ["eventBlocking", "eventCounter"]
        );
        assert_eq!(
            a.clone().union(Wanted::path(&["event"])),
            Wanted::path(&["event"])
        );
        assert_eq!(a.union(Wanted::All), Wanted::All);
        assert_eq!(Wanted::path::<&str>(&[]), Wanted::All);
    }
}
