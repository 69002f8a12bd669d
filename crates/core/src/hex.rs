//! Hexadecimal text for hashes and entry ids: lowercase out, either case in.

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

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hexadecimal of `bytes`. (Every entry on the wire carries its id and content hash
/// in hex, so this is on the hot path of every append and read: a table, not `fmt`.)
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        let [high, low] = digits(byte);
        text.push(char::from(high));
        text.push(char::from(low));
    }
    text
}

/// The two lowercase digits of `byte`.
fn digits(byte: u8) -> [u8; 2] {
    [DIGITS[usize::from(byte >> 4)], DIGITS[usize::from(byte & 0x0f)]]
}

/// Whether `text` is the lowercase hexadecimal of `bytes` (without allocating).
pub fn is_encoding_of(text: &str, bytes: &[u8]) -> bool {
    text.len() == bytes.len() * 2
        && text.as_bytes().chunks_exact(2).zip(bytes).all(|(pair, &byte)| pair == digits(byte))
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
    fn recognises_exactly_its_lowercase_encoding() {
        let bytes = [0x00, 0x9f, 0xa5, 0xff];
        assert!(is_encoding_of("009fa5ff", &bytes));
        assert!(is_encoding_of("", &[]));
        for other in ["009FA5FF", "009fa5fe", "009fa5f", "009fa5ff00", "109fa5ff"] {
            assert!(!is_encoding_of(other, &bytes), "{other}");
        }
    }

    #[test]
    fn round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&bytes)), Ok(bytes));
        assert_eq!(decode("ABcd"), Ok(vec![0xab, 0xcd]));
    }

    #[test]
    fn encodes_lowercase_two_digits_per_byte() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(encode(&[]), "");
        for byte in 0..=255_u8 {
            assert_eq!(encode(&[byte]), format!("{byte:02x}"));
        }
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("a g0"), Err(HexError::InvalidCharacter(1)));
        assert_eq!(decode("é00"), Err(HexError::InvalidCharacter(0)));
    }
}
