//! Hex for JSON: the hashes, keys, signatures and byte strings of proofs are written and read
//! as hex, hundreds per packet at every hop, so these run from lookup tables with one
//! allocation per string (or none, for a hash). They accept and refuse exactly what the `hex`
//! crate does, with the same errors: both cases of digit, an even length, and for a
//! fixed-size field exactly twice its size.

use hex::FromHexError;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Each byte's value as a hex digit; `0xff` where it is not one.
const VALUES: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Writes the lowercase hex of `bytes` into `out`, which holds exactly twice as many bytes.
pub fn encode_to(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 0x0f) as usize];
    }
}

/// The lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode_to(bytes, &mut out);
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Reads hex into `out`, which must be exactly half as long as `s`.
pub fn decode_to(s: &[u8], out: &mut [u8]) -> Result<(), FromHexError> {
    if !s.len().is_multiple_of(2) {
        return Err(FromHexError::OddLength);
    }
    if s.len() / 2 != out.len() {
        return Err(FromHexError::InvalidStringLength);
    }
    for (i, (pair, o)) in s.chunks_exact(2).zip(out.iter_mut()).enumerate() {
        let (hi, lo) = (VALUES[pair[0] as usize], VALUES[pair[1] as usize]);
        if (hi | lo) & 0xf0 != 0 {
            let index = if hi & 0xf0 != 0 { 2 * i } else { 2 * i + 1 };
            return Err(FromHexError::InvalidHexCharacter { c: s[index] as char, index });
        }
        *o = (hi << 4) | lo;
    }
    Ok(())
}

/// Reads hex of any even length.
pub fn decode(s: &[u8]) -> Result<Vec<u8>, FromHexError> {
    // An odd length is refused by `decode_to` before anything is read.
    let mut out = vec![0u8; s.len() / 2];
    decode_to(s, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_byte_round_trips_and_both_cases_are_read() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(encode(&all), hex::encode(&all));
        assert_eq!(decode(encode(&all).as_bytes()).unwrap(), all);
        assert_eq!(decode(b"ABcdEF").unwrap(), vec![0xab, 0xcd, 0xef]);
    }

    proptest! {
        /// The same answer as the `hex` crate for any input, valid or not.
        #[test]
        fn agrees_with_the_hex_crate(s in "[0-9a-fA-FgG \u{e9}]{0,70}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(decode(s.as_bytes()), hex::decode(&s));
            let mut ours = [0u8; 32];
            let mut theirs = [0u8; 32];
            let a = decode_to(s.as_bytes(), &mut ours);
            let b = hex::decode_to_slice(&s, &mut theirs);
            prop_assert_eq!(a, b);
            prop_assert_eq!(ours, theirs);
            prop_assert_eq!(encode(&bytes), hex::encode(&bytes));
        }
    }
}
