//! One node of the tree as a serde deserializer that reads a substituted `${VAR}` string as
//! YAML would have read it unquoted, and a null section as a section of defaults.

use std::cell::RefCell;
use std::collections::HashSet;

use serde::de::{self, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_yaml::Value;

use super::access::{Entries, Items};
use super::error::Error;
use super::{Found, KeyPath, Seg};

/// What every node of one pass shares: the keys hidden from it, and the unknown keys met.
pub(super) struct Ctx<'h> {
    pub(super) hidden: &'h HashSet<KeyPath>,
    pub(super) unknown: RefCell<Vec<Found>>,
}

/// One node of the tree, deserialized leniently (see the module comment).
pub(super) struct Node<'a, 'c> {
    pub(super) value: &'a Value,
    pub(super) path: KeyPath,
    pub(super) ctx: &'c Ctx<'c>,
}

impl<'a, 'c> Node<'a, 'c> {
    pub(super) fn child(&self, value: &'a Value, seg: Seg) -> Node<'a, 'c> {
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
