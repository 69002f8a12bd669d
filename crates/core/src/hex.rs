//! Hexadecimal text for hashes and entry ids: lowercase out, either case in.

use std::fmt::Write as _;

/// Text that should have been hexadecimal was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Hex encodes whole bytes, so the number of digits must be even.
    #[error("hex text must have an even number of digits, got {0}")]
    OddLength(usize),
    /// A character outside `0-9`, `a-f`, `A-F`.
    #[error("hex text has a non-hex character at position {0}")]
    InvalidCharacter(usize),
}

/// Lowercase hexadecimal of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The bytes that `text` encodes.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::OddLength(digits.len()));
    }
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let high = nibble(pair[0]).ok_or(HexError::InvalidCharacter(2 * i))?;
            let low = nibble(pair[1]).ok_or(HexError::InvalidCharacter(2 * i + 1))?;
            Ok(high << 4 | low)
        })
        .collect()
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&bytes)), Ok(bytes));
        assert_eq!(decode("ABcd"), Ok(vec![0xab, 0xcd]));
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("a g0"), Err(HexError::InvalidCharacter(1)));
        assert_eq!(decode("é00"), Err(HexError::InvalidCharacter(0)));
    }
}
