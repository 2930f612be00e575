//! The config document as a YAML tree, typed into the [`super::raw`] structs with every
//! problem collected rather than the first.
//!
//! `${VAR}` is substituted in the tree's scalars before they are typed (GATEWAY.md 2), so a
//! scalar may be a string where a number, a boolean or an enum is wanted: the deserializer
//! here reads such strings as YAML would have read them unquoted (`retries: ${N:-2}`).
//!
//! serde stops at the first error of a struct, so typing runs in passes: a pass that fails
//! at a key records the problem and hides that key from the next pass (its field takes its
//! default, or its entry drops out). Unknown keys are skipped and recorded as they are met,
//! using the field list serde hands to `deserialize_struct`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_yaml::Value;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value is: `upstreams.approvals.timeout`, `state.key[1]`.
pub(super) type KeyPath = Vec<Seg>;

/// `upstreams.approvals.timeout`, as problems name keys.
pub(super) fn show(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A mapping key as text (keys are strings in a config, but YAML allows `1:`).
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

/// A problem met while typing the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// A key that is not one of its section's fields; `path` is the key itself.
    UnknownKey { path: KeyPath, message: String },
    /// A value of the wrong type or form (or a section missing a required key).
    Value { path: KeyPath, message: String },
}

/// The outcome of typing: the value (`None` when the root itself is wrong), what was
/// found, and the keys that were hidden because of it.
pub(super) struct Typed<T> {
    pub value: Option<T>,
    pub found: Vec<Found>,
    pub hidden: HashSet<KeyPath>,
}

/// Types `doc` as `T`, hiding `hidden` (keys already known to be wrong) from the start.
pub(super) fn typed<T: DeserializeOwned>(doc: &Value, mut hidden: HashSet<KeyPath>) -> Typed<T> {
    let mut found: Vec<Found> = Vec::new();
    loop {
        let ctx = Ctx {
            hidden: &hidden,
            unknown: RefCell::new(Vec::new()),
        };
        let result = T::deserialize(Node {
            value: doc,
            path: Vec::new(),
            ctx: &ctx,
        });
        for unknown in ctx.unknown.into_inner() {
            if !found.contains(&unknown) {
                found.push(unknown);
            }
        }
        let error = match result {
            Ok(value) => {
                return Typed {
                    value: Some(value),
                    found,
                    hidden,
                }
            }
            Err(error) => error,
        };
        let path = error.path.unwrap_or_default();
        let consequence = error.missing.is_some_and(|field| {
            let mut child = path.clone();
            child.push(Seg::Key(field.to_owned()));
            hidden.contains(&child)
        });
        if !consequence {
            found.push(Found::Value {
                path: path.clone(),
                message: error.message,
            });
        }
        if path.is_empty() || !hidden.insert(path) {
            return Typed {
                value: None,
                found,
                hidden,
            };
        }
    }
}

struct Ctx<'h> {
    hidden: &'h HashSet<KeyPath>,
    unknown: RefCell<Vec<Found>>,
}

/// A typing error and the key it is about.
#[derive(Debug)]
pub(super) struct Error {
    path: Option<KeyPath>,
    message: String,
    /// Set for serde's "missing field" errors: which field.
    missing: Option<&'static str>,
}

impl Error {
    fn at(mut self, path: &[Seg]) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_vec());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            message: msg.to_string(),
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            path: None,
            message: format!("missing field `{field}`"),
            missing: Some(field),
        }
    }
}

/// One node of the tree, deserialized leniently (see the module comment).
struct Node<'a, 'c> {
    value: &'a Value,
    path: KeyPath,
    ctx: &'c Ctx<'c>,
}

impl<'a, 'c> Node<'a, 'c> {
    fn child(&self, value: &'a Value, seg: Seg) -> Node<'a, 'c> {
        let mut path = self.path.clone();
        path.push(seg);
        Node {
            value,
            path,
            ctx: self.ctx,
        }
    }

    fn any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Sequence(items) => visitor.visit_seq(Items {
                iter: items.iter().enumerate(),
                node: &self,
            }),
            Value::Mapping(map) => visitor.visit_map(Entries {
                iter: map.iter(),
                node: &self,
                fields: None,
                pending: None,
            }),
            Value::Tagged(tagged) => Node {
                value: &tagged.value,
                path: self.path.clone(),
                ctx: self.ctx,
            }
            .any(visitor),
        }
    }

    /// An integer, also from a string (a substituted `${VAR}`).
    fn integer<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::String(s) => {
                let text = s.trim();
                if let Ok(u) = text.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if let Ok(i) = text.parse::<i64>() {
                    visitor.visit_i64(i)
                } else {
                    Err(de::Error::invalid_type(Unexpected::Str(s), &visitor))
                }
            }
            _ => self.any(visitor),
        }
    }

    fn float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
            },
            _ => self.any(visitor),
        }
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let path = self.path.clone();
            self.integer(visitor).map_err(|e| e.at(&path))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        self.any(visitor).map_err(|e| e.at(&path))
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        self.float(visitor).map_err(|e| e.at(&path))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        self.float(visitor).map_err(|e| e.at(&path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            // The YAML 1.2 core schema's spellings.
            Value::String(s) => match s.trim() {
                "true" | "True" | "TRUE" => visitor.visit_bool(true),
                "false" | "False" | "FALSE" => visitor.visit_bool(false),
                _ => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
            },
            _ => self.any(visitor),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            // `secret: 12345` and `listen: 8080` are text in a config.
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            _ => self.any(visitor),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            Value::String(s) => {
                let variant: de::value::BorrowedStrDeserializer<'de, Error> =
                    de::value::BorrowedStrDeserializer::new(s);
                visitor.visit_enum(variant)
            }
            _ => self.any(visitor),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            Value::Mapping(map) => visitor.visit_map(Entries {
                iter: map.iter(),
                node: &self,
                fields: Some(fields),
                pending: None,
            }),
            // `server:` with every key commented out: a section of defaults.
            Value::Null => visitor.visit_map(empty()),
            other => Err(de::Error::custom(format!(
                "invalid type: {}, expected a section with the keys {}",
                unexpected(other),
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        match self.value {
            Value::Null => visitor.visit_map(empty()),
            _ => self.any(visitor),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct seq tuple tuple_struct
    }
}

/// A mapping without entries.
fn empty() -> de::value::MapDeserializer<'static, std::iter::Empty<(String, String)>, Error> {
    de::value::MapDeserializer::new(std::iter::empty())
}

/// What a value is, as serde's "invalid type" messages say it.
fn unexpected(value: &Value) -> String {
    match value {
        Value::Null => "unit value".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(_) => "sequence".into(),
        Value::Mapping(_) => "map".into(),
        Value::Tagged(tagged) => unexpected(&tagged.value),
    }
}

/// A mapping's entries; for a struct, unknown keys are recorded and skipped.
struct Entries<'a, 'n, 'c> {
    iter: serde_yaml::mapping::Iter<'a>,
    node: &'n Node<'a, 'c>,
    fields: Option<&'static [&'static str]>,
    pending: Option<Node<'a, 'c>>,
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
struct Items<'a, 'n, 'c> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    node: &'n Node<'a, 'c>,
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
