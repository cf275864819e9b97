//! Internally tagged JSON objects (`{"type": "...", ...}`) read without buffering.
//!
//! serde's derived form of an internally tagged enum first buffers the whole object into an
//! intermediate tree, because the tag may come last; for a batch of packet proofs that tree
//! costs about as much as the parse itself. Writers (serde's derived `Serialize`, the bridges,
//! the shard) put the tag first, so [`deserialize`] reads it, then hands the rest of the same
//! object straight to the variant's fields. An object whose tag comes later is still accepted:
//! it is read through a JSON value, as the derived form would, with the same result.

use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::marker::PhantomData;

/// The name of the tag field.
pub const TAG: &str = "type";

/// An internally tagged enum that reads its variant from the tag and the rest of the object.
pub trait TagFirst: Sized {
    /// What the input should be, for error messages.
    const EXPECTING: &'static str;

    /// Reads the variant named `tag` from `rest`, the object's other fields (a map).
    fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error>;
}

/// Deserializes `T` from an object carrying its tag under [`TAG`].
pub fn deserialize<'de, D: Deserializer<'de>, T: TagFirst>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TagFirstVisitor(PhantomData))
}

struct TagFirstVisitor<T>(PhantomData<T>);

impl<'de, T: TagFirst> Visitor<'de> for TagFirstVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key::<Cow<'de, str>>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first == TAG {
            let tag: Cow<'de, str> = map.next_value()?;
            return T::variant(&tag, de::value::MapAccessDeserializer::new(map));
        }
        // The tag comes later: read the object whole, then take the tag out of it.
        let mut object = serde_json::Map::new();
        object.insert(first.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
        let tag = match object.remove(TAG) {
            Some(serde_json::Value::String(tag)) => tag,
            Some(other) => {
                return Err(de::Error::invalid_type(unexpected(&other), &"a string tag"));
            }
            None => return Err(de::Error::missing_field(TAG)),
        };
        T::variant(&tag, serde_json::Value::Object(object).into_deserializer())
            .map_err(de::Error::custom)
    }
}

fn unexpected(value: &serde_json::Value) -> de::Unexpected<'_> {
    match value {
        serde_json::Value::Null => de::Unexpected::Unit,
        serde_json::Value::Bool(b) => de::Unexpected::Bool(*b),
        serde_json::Value::Number(_) => de::Unexpected::Other("a number"),
        serde_json::Value::String(s) => de::Unexpected::Str(s),
        serde_json::Value::Array(_) => de::Unexpected::Seq,
        serde_json::Value::Object(_) => de::Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// The same enum derived (the reference) and read tag first.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Derived {
        Pair { left: u32, right: Vec<String> },
        Note { detail: String },
        Empty,
    }

    #[derive(Debug, PartialEq)]
    struct Streamed(Derived);

    impl TagFirst for Streamed {
        const EXPECTING: &'static str = "a tagged object";
        fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            struct Pair {
                left: u32,
                right: Vec<String>,
            }
            #[derive(Deserialize)]
            struct Note {
                detail: String,
            }
            Ok(Streamed(match tag {
                "pair" => {
                    let p = Pair::deserialize(rest)?;
                    Derived::Pair { left: p.left, right: p.right }
                }
                "note" => Derived::Note { detail: Note::deserialize(rest)?.detail },
                "empty" => {
                    de::IgnoredAny::deserialize(rest)?;
                    Derived::Empty
                }
                other => return Err(de::Error::unknown_variant(other, &["pair", "note", "empty"])),
            }))
        }
    }

    impl<'de> Deserialize<'de> for Streamed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d)
        }
    }

    /// Tag first, tag last, tag in the middle, extra fields, missing fields, wrong types, an
    /// unknown variant, no tag, a tag that is not a string, not an object: the streamed
    /// reading accepts what the derived one accepts, with the same value, and refuses what it
    /// refuses.
    #[test]
    fn streamed_and_derived_readings_agree() {
        let inputs = [
            r#"{"type":"pair","left":1,"right":["a","b"]}"#,
            r#"{"left":1,"right":["a"],"type":"pair"}"#,
            r#"{"left":1,"type":"pair","right":[]}"#,
            r#"{"type":"pair","left":1,"right":[],"extra":{"x":[1,2]}}"#,
            r#"{"type":"pair","left":1}"#,
            r#"{"type":"pair","left":"1","right":[]}"#,
            r#"{"type":"note","detail":"why"}"#,
            r#"{"detail":"why","type":"note"}"#,
            r#"{"type":"empty"}"#,
            r#"{"type":"empty","ignored":true}"#,
            r#"{"type":"other"}"#,
            r#"{"left":1,"right":[]}"#,
            r#"{"type":3,"detail":"x"}"#,
            r#"{"detail":"x","type":3}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#""pair""#,
        ];
        for input in inputs {
            let derived = serde_json::from_str::<Derived>(input);
            let streamed = serde_json::from_str::<Streamed>(input);
            match (derived, streamed) {
                (Ok(d), Ok(s)) => assert_eq!(s.0, d, "{input}"),
                (Err(_), Err(_)) => {}
                (d, s) => panic!("{input}: derived {d:?}, streamed {s:?}"),
            }
        }
        // And what the derived form writes, it reads back.
        for value in [
            Derived::Pair { left: 7, right: vec!["z".into()] },
            Derived::Note { detail: "d".into() },
            Derived::Empty,
        ] {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<Streamed>(&json).unwrap().0, value);
        }
    }
}
