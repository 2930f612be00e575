//! A mapping's entries and a sequence's items, handed to serde one by one: hidden keys are
//! skipped, and a struct's unknown keys are recorded and skipped.

use serde::de;
use serde_yaml::Value;

use super::error::Error;
use super::node::Node;
use super::{key_text, Found, Seg};

/// A mapping's entries; for a struct, unknown keys are recorded and skipped.
pub(super) struct Entries<'a, 'n, 'c> {
    pub(super) iter: serde_yaml::mapping::Iter<'a>,
    pub(super) node: &'n Node<'a, 'c>,
    pub(super) fields: Option<&'static [&'static str]>,
    pub(super) pending: Option<Node<'a, 'c>>,
}

impl<'a> de::MapAccess<'a> for Entries<'a, '_, '_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.iter.by_ref() {
            let name = key_text(key);
            let child = self.node.child(value, Seg::Key(name.clone()));
            if self.node.ctx.hidden.contains(&child.path) {
                continue;
            }
            if let Some(fields) = self.fields {
                if !fields.contains(&name.as_str()) {
                    let error: Error = de::Error::unknown_field(&name, fields);
                    self.node.ctx.unknown.borrow_mut().push(Found::UnknownKey {
                        path: child.path,
                        message: error.message,
                    });
                    continue;
                }
            }
            let key_node = Node {
                value: key,
                path: child.path.clone(),
                ctx: self.node.ctx,
            };
            self.pending = Some(child);
            return seed.deserialize(key_node).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: de::DeserializeSeed<'a>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let Some(node) = self.pending.take() else {
            return Err(de::Error::custom("a value without its key"));
        };
        let path = node.path.clone();
        seed.deserialize(node).map_err(|e| e.at(&path))
    }
}

/// A sequence's items.
pub(super) struct Items<'a, 'n, 'c> {
    pub(super) iter: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    pub(super) node: &'n Node<'a, 'c>,
}

impl<'a> de::SeqAccess<'a> for Items<'a, '_, '_> {
    type Error = Error;

    fn next_element_seed<S: de::DeserializeSeed<'a>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        for (i, value) in self.iter.by_ref() {
            let child = self.node.child(value, Seg::Index(i));
            if self.node.ctx.hidden.contains(&child.path) {
                continue;
            }
            let path = child.path.clone();
            return seed.deserialize(child).map(Some).map_err(|e| e.at(&path));
        }
        Ok(None)
    }
}
