//! JSON decoded the way Go's `encoding/json` decodes it, so every plugin takes whatever the Go
//! plugins take.
//!
//! Runtimes are Go programs, and some of what they send was never spelled by hand: containerd's
//! go-cni marshals its capability structs without JSON tags, so portmap receives
//! `{"HostPort":8080,"ContainerPort":80,...}` and host-local `{"Subnet":...}`. Go reads these
//! because `encoding/json` matches an object key to a struct field exactly if it can and
//! otherwise **ignoring case**. Every config type of the suite is decoded through
//! [`from_slice`] / [`from_value`], which apply the same rules to any `#[derive(Deserialize)]`
//! struct, at any depth:
//!
//! - A key names the field whose (renamed) name equals it; failing that, the first field, in
//!   declaration order, whose name equals it under Go's case folding ([`fold_eq`]). Keys that
//!   name no field are ignored, as Go ignores them.
//! - Two keys that name the same field (`"hostPort"` and `"HostPort"` in one object): the one
//!   later in the document wins, as in Go. Keys that are *exactly* equal are refused before
//!   decoding ([`crate::NetConf::parse`]): which of two `dataDir`s counts is not something a
//!   config should leave to a parser.
//! - `null` for a struct field leaves the field at its default, as Go leaves a non-pointer
//!   field untouched.
//! - Map keys (`capabilities`, flannel's `delegate`) stay as written: Go keeps map keys too.
//! - Type mismatches are errors, as in Go; the caller turns them into a code-7 CNI error.
//!
//! Enum variants are matched exactly (none of the wire formats here uses a tagged enum).

use std::borrow::Cow;
use std::fmt;

use serde::de::value::CowStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::Value;
use serde_json::value::RawValue;

/// Decodes `bytes` into `T` with Go's key matching.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let raw: &RawValue = serde_json::from_slice(bytes)?;
    T::deserialize(GoDecoder(raw))
}

/// Decodes an already parsed value into `T` with Go's key matching. A parsed object has lost
/// its key order, so for two keys naming one field the later in sort order wins here; decode
/// the original bytes with [`from_slice`] where document order matters.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    from_slice(value.to_string().as_bytes())
}

/// Looks a key up in a parsed object as Go finds a struct field: exact first, else the
/// smallest key (sort order) that matches under Go's case folding.
pub fn get<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .get(key)
        .or_else(|| object.iter().find(|(k, _)| fold_eq(k, key)).map(|(_, v)| v))
}

/// Go's `bytes.EqualFold` on field names: ASCII letters without case, and any other character
/// mapped through simple lower- then upper-casing (so `"\u{212a}"`, the Kelvin sign, matches
/// `"k"`, as it does in Go).
pub fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let lower = single(c.to_lowercase()).unwrap_or(c);
    single(lower.to_uppercase()).unwrap_or(lower)
}

/// Go's case mappings are rune to rune: a character whose mapping is longer stays as it is.
fn single(mut mapped: impl Iterator<Item = char>) -> Option<char> {
    match (mapped.next(), mapped.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// A deserializer over one JSON value of the input, still as text: objects are split into
/// their entries only when the target type is known, so a struct sees its keys in document
/// order and with its own field names at hand.
#[derive(Clone, Copy)]
struct GoDecoder<'de>(&'de RawValue);

impl<'de> GoDecoder<'de> {
    fn first_byte(&self) -> u8 {
        self.0
            .get()
            .trim_start()
            .as_bytes()
            .first()
            .copied()
            .unwrap_or(b' ')
    }

    /// The value as a parsed tree, for scalars (their type errors then carry no position
    /// inside a fragment, which would mislead).
    fn scalar(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    fn entries(&self) -> Result<Vec<(Cow<'de, str>, &'de RawValue)>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        let entries = de.deserialize_map(EntriesVisitor)?;
        de.end()?;
        Ok(entries)
    }

    fn elements(&self) -> Result<Vec<&'de RawValue>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

/// Collects an object's entries without decoding their values.
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            out.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Resolves an object's keys against a struct's fields (see the module docs): each entry is
/// renamed to the field it names, entries with `null` are dropped, and of several entries for
/// one field only the last stays.
fn resolve<'de>(
    entries: Vec<(Cow<'de, str>, &'de RawValue)>,
    fields: &'static [&'static str],
) -> Vec<(Cow<'de, str>, &'de RawValue)> {
    let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let name: Cow<'de, str> = if fields.contains(&key.as_ref()) {
            key
        } else if let Some(field) = fields.iter().find(|f| fold_eq(f, &key)) {
            Cow::Borrowed(*field)
        } else {
            key
        };
        out.retain(|(k, _)| *k != name);
        if value.get().trim() != "null" {
            out.push((name, value));
        }
    }
    out
}

struct Entries<'de> {
    entries: std::vec::IntoIter<(Cow<'de, str>, &'de RawValue)>,
    value: Option<&'de RawValue>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        let key: CowStrDeserializer<'de, serde_json::Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a map value was asked for before its key"))?;
        seed.deserialize(GoDecoder(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Elements<'de>(std::vec::IntoIter<&'de RawValue>);

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(GoDecoder(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl<'de> GoDecoder<'de> {
    fn visit_object<V: Visitor<'de>>(
        self,
        fields: Option<&'static [&'static str]>,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        let entries = self.entries()?;
        let entries = match fields {
            Some(fields) => resolve(entries, fields),
            None => entries,
        };
        visitor.visit_map(Entries {
            entries: entries.into_iter(),
            value: None,
        })
    }

    fn visit_array<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        visitor.visit_seq(Elements(self.elements()?.into_iter()))
    }
}

/// Scalars are handed to serde_json's own deserializer for the parsed value: its conversions
/// and type errors are the ones the suite always had.
macro_rules! scalar {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.scalar()?.$method(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for GoDecoder<'de> {
    type Error = serde_json::Error;

    scalar! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.first_byte() {
            b'{' => self.visit_object(None, visitor),
            b'[' => self.visit_array(visitor),
            _ => self.scalar()?.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.0.get().trim() == "null" {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.scalar()?.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.first_byte() {
            b'[' => self.visit_array(visitor),
            _ => self.scalar()?.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.first_byte() {
            b'{' => self.visit_object(None, visitor),
            _ => self.scalar()?.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.first_byte() {
            b'{' => self.visit_object(Some(fields), visitor),
            _ => self.scalar()?.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.scalar()?.deserialize_enum(name, variants, visitor)
    }
}

#[cfg(test)]
mod tests;
