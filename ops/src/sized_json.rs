//! JSON bodies written into a buffer sized up front.
//!
//! The bodies a bridge sends (to the other city's bridge, and batches to its shard) hold up to
//! a few hundred proofs: about a megabyte. Written into a buffer that starts small and
//! doubles, such a body is copied a dozen times over and, past the allocator's large-object
//! size, each doubling takes fresh pages from the kernel, which zeroes them first. A caller
//! that knows how many items a body holds gives a size hint; a wrong hint costs only a
//! regrowth.

use serde::Serialize;

/// Serializes `value` into a buffer of `hint` bytes to start with.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, hint: usize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hint);
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The bytes are serde_json's whatever the hint.
    #[test]
    fn sized_json_is_plain_json() {
        let value = serde_json::json!({"packets": [1, 2, 3], "name": "a\"b"});
        for hint in [0, 3, 1 << 16] {
            assert_eq!(to_vec(&value, hint).unwrap(), serde_json::to_vec(&value).unwrap());
        }
    }
}
