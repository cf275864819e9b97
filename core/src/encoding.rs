//! The canonical encoding: borsh, decoded strictly (no trailing bytes, bounded input).

use borsh::{BorshDeserialize, BorshSerialize};

/// Largest input any decoder of network bytes accepts (16 MiB). Callers with tighter limits
/// (an HTTP body limit, a packet limit) apply theirs first.
pub const DECODE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why bytes were refused by [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the decoder accepts.
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit applied.
        max: usize,
    },
    /// The bytes are not the canonical encoding of the expected type (bad tag, bad length,
    /// invalid UTF-8, non-canonical value, truncated input, trailing bytes).
    #[error("not a canonical encoding of {type_name}: {reason}")]
    Malformed {
        /// The type that was expected.
        type_name: &'static str,
        /// What the decoder reported.
        reason: String,
    },
}

/// The canonical bytes of a value.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing to a Vec cannot fail; borsh only fails on I/O errors of the writer.
    borsh::to_vec(value).unwrap_or_default()
}

/// Decodes exactly one value from `bytes`: the whole input must be consumed.
pub fn decode<T: BorshDeserialize + BorshSerialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with_limit(bytes, DECODE_BYTES_MAX)
}

/// As [`decode`], with a caller-chosen size limit.
pub fn decode_with_limit<T: BorshDeserialize + BorshSerialize>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { len: bytes.len(), max });
    }
    let mut rest = bytes;
    let value = T::deserialize(&mut rest).map_err(|e| DecodeError::Malformed {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            type_name: std::any::type_name::<T>(),
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    // Decoding and re-encoding must give the input back: one value, one encoding.
    if encode(&value).as_slice() != bytes {
        return Err(DecodeError::Malformed {
            type_name: std::any::type_name::<T>(),
            reason: "non-canonical encoding".into(),
        });
    }
    Ok(value)
}

/// Serde helpers that write byte strings as lowercase hex in JSON.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as hex.
    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hexfmt::encode(v.as_ref()))
    }

    /// Deserialises hex into a `Vec<u8>` or a fixed array.
    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<Vec<u8>>,
    {
        let s = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
        let bytes = crate::hexfmt::decode(s.as_bytes()).map_err(serde::de::Error::custom)?;
        let len = bytes.len();
        T::try_from(bytes)
            .map_err(|_| serde::de::Error::custom(format!("wrong length {len} for this field")))
    }
}

/// Serde helpers that write an optional byte string as hex (or `null`) in JSON.
pub mod hex_option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `Some(bytes)` as hex, `None` as null.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&crate::hexfmt::encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Deserialises hex or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
        s.map(|s| crate::hexfmt::decode(s.as_bytes()).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32);
        assert_eq!(decode::<u32>(&bytes), Ok(7));
        bytes.push(0);
        assert!(matches!(decode::<u32>(&bytes), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn non_canonical_bool_and_option_are_refused() {
        assert!(decode::<bool>(&[2]).is_err());
        assert!(decode::<Option<u8>>(&[2, 0]).is_err());
    }

    #[test]
    fn oversized_length_is_an_error_not_an_allocation() {
        // A Vec<u64> claiming 2^32-1 elements with no data behind it.
        let bytes = [0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
        assert!(matches!(
            decode_with_limit::<Vec<u8>>(&[0; 10], 4),
            Err(DecodeError::TooLarge { len: 10, max: 4 })
        ));
    }
}

/// Serde for `u128` amounts in JSON as decimal strings: JSON numbers lose precision above
/// 2^53 in many readers, and serde cannot buffer a `u128` inside a tagged enum. Reading also
/// takes a plain number that fits in `u64`.
pub mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the decimal string.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Text(String),
        Number(u64),
    }

    /// Reads a decimal string (or a number that fits in `u64`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        match Amount::deserialize(d)? {
            Amount::Number(n) => Ok(u128::from(n)),
            Amount::Text(t) => {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(serde::de::Error::custom("amount must be decimal digits"));
                }
                t.parse().map_err(serde::de::Error::custom)
            }
        }
    }
}
