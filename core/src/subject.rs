//! Pseudonymous subject ids: keyed BLAKE3 of a normalised identifier under the federation's
//! subject key. The raw identifier never leaves the adapter that computes this.

use crate::hash::Hash32;
use crate::record::SubjectId;
use std::fmt;
use zeroize::Zeroize;

/// The federation-wide subject key. Held by the cities' adapters only (see ADR 0002);
/// never in genesis, never given to relays or validators. Zeroised on drop.
pub struct SubjectKey([u8; 32]);

impl SubjectKey {
    /// From its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SubjectKey(bytes)
    }
}

impl Drop for SubjectKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

/// The kind of identifier a subject id is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifierScheme {
    /// A national identifier, with its ISO 3166-1 alpha-2 country code.
    National {
        /// Country code, two ASCII letters.
        country: String,
    },
    /// A Legal Entity Identifier (ISO 17442), checksum verified.
    Lei,
    /// A Chinese unified social credit code (18 characters).
    Uscc,
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The country code is not two ASCII letters.
    #[error("country code must be two ASCII letters")]
    Country,
    /// The identifier is empty or has characters other than letters, digits, spaces, `-`, `.`, `/`.
    #[error("identifier must be 1..=64 letters or digits (spaces, '-', '.', '/' are ignored)")]
    Characters,
    /// An LEI that is not 20 characters or fails the ISO 7064 MOD 97-10 check.
    #[error("not a valid LEI (20 characters, ISO 7064 MOD 97-10 check digits)")]
    Lei,
    /// A unified social credit code that is not 18 characters.
    #[error("a unified social credit code has 18 characters")]
    Uscc,
}

/// Normalises an identifier: separators removed, letters upper-cased, scheme checks applied.
pub fn normalise(scheme: &IdentifierScheme, raw: &str) -> Result<String, SubjectError> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        match c {
            ' ' | '-' | '.' | '/' => {}
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_uppercase()),
            _ => return Err(SubjectError::Characters),
        }
    }
    if out.is_empty() || out.len() > 64 {
        return Err(SubjectError::Characters);
    }
    match scheme {
        IdentifierScheme::National { country } => {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(SubjectError::Country);
            }
        }
        IdentifierScheme::Lei => {
            if out.len() != 20 || !lei_checksum_ok(&out) {
                return Err(SubjectError::Lei);
            }
        }
        IdentifierScheme::Uscc => {
            if out.len() != 18 {
                return Err(SubjectError::Uscc);
            }
        }
    }
    Ok(out)
}

/// The subject id: `BLAKE3-keyed(subject_key, scheme_tag || 0x00 || normalised)`, where the
/// scheme tag is `national:CC`, `lei` or `uscc`.
pub fn subject_id(
    key: &SubjectKey,
    scheme: &IdentifierScheme,
    raw: &str,
) -> Result<SubjectId, SubjectError> {
    let normalised = normalise(scheme, raw)?;
    let tag = match scheme {
        IdentifierScheme::National { country } => {
            format!("national:{}", country.to_ascii_uppercase())
        }
        IdentifierScheme::Lei => "lei".to_string(),
        IdentifierScheme::Uscc => "uscc".to_string(),
    };
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(tag.as_bytes());
    h.update(&[0]);
    h.update(normalised.as_bytes());
    Ok(SubjectId(Hash32(*h.finalize().as_bytes())))
}

/// ISO 7064 MOD 97-10 over the LEI with letters as 10..35.
fn lei_checksum_ok(lei: &str) -> bool {
    let mut rem: u32 = 0;
    for c in lei.chars() {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_identifier_in_any_spelling_gives_one_id() {
        let k = SubjectKey::from_bytes([3; 32]);
        let s = IdentifierScheme::National { country: "DE".into() };
        let a = subject_id(&k, &s, "12 345-678").unwrap();
        let b = subject_id(&k, &s, "12345678").unwrap();
        assert_eq!(a, b);
        let other = subject_id(&SubjectKey::from_bytes([4; 32]), &s, "12345678").unwrap();
        assert_ne!(a, other);
        let fr = subject_id(&k, &IdentifierScheme::National { country: "FR".into() }, "12345678");
        assert_ne!(Some(a), fr.ok());
    }

    #[test]
    fn lei_checksum_is_checked() {
        // GLEIF's own LEI.
        assert!(normalise(&IdentifierScheme::Lei, "5299000J2N45DDNE4Y28").is_ok());
        assert_eq!(
            normalise(&IdentifierScheme::Lei, "5299000J2N45DDNE4Y29"),
            Err(SubjectError::Lei)
        );
        assert_eq!(normalise(&IdentifierScheme::Lei, "ABC"), Err(SubjectError::Lei));
    }
}
