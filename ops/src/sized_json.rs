//! JSON bodies written into a buffer sized up front.
//!
//! The bodies between a shard and its bridge, and between bridges, hold up to a few hundred
//! proofs: about a megabyte. Written into a buffer that starts small and doubles, such a body
//! is copied a dozen times over and, past the allocator's large-object size, each doubling
//! takes fresh pages from the kernel, which zeroes them first. A caller that knows how many
//! items a body holds gives a size hint; a wrong hint costs only a regrowth.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Serializes `value` into a buffer of `hint` bytes to start with.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, hint: usize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hint);
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

/// A JSON answer written into a buffer of `hint` bytes to start with (what `axum::Json`
/// answers, without its 128-byte start).
pub struct SizedJson<T>(pub T, pub usize);

impl<T: Serialize> IntoResponse for SizedJson<T> {
    fn into_response(self) -> Response {
        match to_vec(&self.0, self.1) {
            Ok(body) => {
                ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                    .into_response()
            }
            // What `axum::Json` answers when a value does not serialize.
            Err(e) => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
                e.to_string(),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The bytes are serde_json's whatever the hint, and the answer is JSON.
    #[test]
    fn sized_json_is_plain_json() {
        let value = serde_json::json!({"packets": [1, 2, 3], "name": "a\"b"});
        for hint in [0, 3, 1 << 16] {
            assert_eq!(to_vec(&value, hint).unwrap(), serde_json::to_vec(&value).unwrap());
        }
        let r = SizedJson(&value, 10).into_response();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
