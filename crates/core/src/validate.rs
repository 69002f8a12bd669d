//! Checked names and labels: [`ContextId`], [`Key`], [`AppendId`], [`Metadata`], and the
//! payload bound.
//!
//! Each type can only be built through a `try_*` constructor that enforces CONTRACT §2, so a
//! value of the type is proof that it was checked. Every error says what to change.

use std::collections::BTreeMap;
use std::fmt;

use crate::lamport::LamportTime;
use crate::limits::{
    APPEND_ID_BYTES_MAX, CONTEXT_ID_BYTES_MAX, KEY_BYTES_MAX, LAMPORT_CLOCK_MAX,
    METADATA_BYTES_MAX, METADATA_PAIRS_MAX,
};

/// The request field a [`ValidationError`] is about, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `context_id`.
    ContextId,
    /// `key`.
    Key,
    /// `append_id`.
    AppendId,
    /// `load_id`.
    LoadId,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ContextId => "context_id",
            Self::Key => "key",
            Self::AppendId => "append_id",
            Self::LoadId => "load_id",
        })
    }
}

/// A request value broke a rule of CONTRACT §2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A Lamport clock above [`LAMPORT_CLOCK_MAX`].
    #[error(
        "lamport clock {value} is too large: received_lamport_clock and the clocks of a loaded snapshot must be below 2^62 (at most {max}), so a context's clock never nears overflow"
    )]
    LamportClock {
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A name that must be 1 or more bytes was empty.
    #[error("{field} must not be empty")]
    Empty {
        /// Which field.
        field: Field,
    },
    /// A name was longer than its limit.
    #[error("{field} is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// Which field.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A name held a control character (newline, tab, NUL, DEL, C1 controls).
    #[error(
        "{field} contains the control character U+{code:04X} at byte {offset}; names must be printable text"
    )]
    ControlCharacter {
        /// Which field.
        field: Field,
        /// Byte offset of the character.
        offset: usize,
        /// Its Unicode scalar value.
        code: u32,
    },
    /// Too many metadata pairs.
    #[error("metadata has {count} pairs; the limit is {max}")]
    MetadataPairs {
        /// How many pairs were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Metadata keys and values together were too large.
    #[error(
        "metadata is {len} bytes (keys and values together); the limit is {max} bytes, so put bulk data in the payload"
    )]
    MetadataBytes {
        /// Their total length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

/// A payload was larger than the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload is {len} bytes; the limit is {max} bytes")]
pub struct PayloadTooLarge {
    /// Its length in bytes.
    pub len: usize,
    /// The configured limit in bytes.
    pub max: usize,
}

/// Checks a payload length against a limit (a node's `Limits::payload_bytes_max`, or a
/// cluster's).
pub fn check_payload(len: usize, max: usize) -> Result<(), PayloadTooLarge> {
    if len > max {
        return Err(PayloadTooLarge { len, max });
    }
    Ok(())
}

fn check_name(field: Field, text: &str, max: usize) -> Result<(), ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if text.len() > max {
        return Err(ValidationError::TooLong { field, len: text.len(), max });
    }
    if let Some((offset, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ValidationError::ControlCharacter { field, offset, code: u32::from(c) });
    }
    Ok(())
}

macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $field:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `text` and wraps it.
            pub fn try_new(text: impl Into<String>) -> Result<Self, ValidationError> {
                let text = text.into();
                check_name($field, &text, $max)?;
                Ok(Self(text))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, unwrapped.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(text: String) -> Result<Self, ValidationError> {
                Self::try_new(text)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(text: &str) -> Result<Self, ValidationError> {
                Self::try_new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

checked_name!(
    /// The name of a context: UTF-8, 1 to [`CONTEXT_ID_BYTES_MAX`] bytes, no control characters.
    ContextId,
    Field::ContextId,
    CONTEXT_ID_BYTES_MAX
);

checked_name!(
    /// The key of an entry: UTF-8, 1 to [`KEY_BYTES_MAX`] bytes, no control characters.
    Key,
    Field::Key,
    KEY_BYTES_MAX
);

checked_name!(
    /// A client's idempotency token for one Append: 1 to [`APPEND_ID_BYTES_MAX`] bytes, no
    /// control characters. Recorded per context, outside the entry and its hash.
    AppendId,
    Field::AppendId,
    APPEND_ID_BYTES_MAX
);

impl AppendId {
    /// Checks a Load's `load_id` by the same rules: it is recorded as the append id of the
    /// first entry the load restores.
    pub fn try_new_load(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        check_name(Field::LoadId, &text, APPEND_ID_BYTES_MAX)?;
        Ok(Self(text))
    }
}

/// Labels on an entry: at most [`METADATA_PAIRS_MAX`] pairs and [`METADATA_BYTES_MAX`] bytes.
///
/// Keys and values may be any text, including empty strings, newlines and tabs. Pairs are
/// kept sorted by the UTF-8 bytes of their keys, the order CONTRACT §3 hashes them in (Rust
/// orders `String`s by their bytes).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Metadata with no pairs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the pairs and keeps them sorted by key. Pairs beyond the limit are rejected, not
    /// dropped; a repeated key keeps its last value.
    pub fn try_from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ValidationError> {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        if map.len() > METADATA_PAIRS_MAX {
            return Err(ValidationError::MetadataPairs {
                count: map.len(),
                max: METADATA_PAIRS_MAX,
            });
        }
        let len: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        if len > METADATA_BYTES_MAX {
            return Err(ValidationError::MetadataBytes { len, max: METADATA_BYTES_MAX });
        }
        Ok(Self(map))
    }

    /// The pairs in key-byte order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys and values together, in bytes.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The sorted map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The sorted map, unwrapped.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_contract_range() {
        assert!(ContextId::try_new("growth-strategy-001").is_ok());
        assert!(ContextId::try_new("x".repeat(CONTEXT_ID_BYTES_MAX)).is_ok());
        assert!(ContextId::try_new("ünïcode/路径 ok").is_ok());
        assert!(Key::try_new("k").is_ok());
        assert!(AppendId::try_new("a".repeat(APPEND_ID_BYTES_MAX)).is_ok());
    }

    #[test]
    fn names_reject_with_actionable_errors() {
        assert_eq!(ContextId::try_new(""), Err(ValidationError::Empty { field: Field::ContextId }));
        let long = Key::try_new("k".repeat(KEY_BYTES_MAX + 1)).unwrap_err();
        assert_eq!(
            long,
            ValidationError::TooLong {
                field: Field::Key,
                len: KEY_BYTES_MAX + 1,
                max: KEY_BYTES_MAX
            }
        );
        assert_eq!(long.to_string(), "key is 1025 bytes long; the limit is 1024 bytes");
        let tab = ContextId::try_new("a\tb").unwrap_err();
        assert_eq!(
            tab,
            ValidationError::ControlCharacter { field: Field::ContextId, offset: 1, code: 9 }
        );
        assert!(tab.to_string().contains("U+0009 at byte 1"), "{tab}");
        assert!(Key::try_new("del\u{7f}").is_err());
        assert!(Key::try_new("c1\u{85}").is_err());
        assert!(AppendId::try_new("a".repeat(APPEND_ID_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn metadata_limits() {
        let ok = Metadata::try_from_pairs([("note".into(), "line one\n\tline two".into())]);
        assert_eq!(ok.unwrap().get("note"), Some("line one\n\tline two"));
        let many = (0..=METADATA_PAIRS_MAX).map(|i| (i.to_string(), String::new()));
        assert_eq!(
            Metadata::try_from_pairs(many),
            Err(ValidationError::MetadataPairs {
                count: METADATA_PAIRS_MAX + 1,
                max: METADATA_PAIRS_MAX
            })
        );
        let big = [("k".to_string(), "v".repeat(METADATA_BYTES_MAX))];
        assert!(matches!(
            Metadata::try_from_pairs(big),
            Err(ValidationError::MetadataBytes { len, .. }) if len == METADATA_BYTES_MAX + 1
        ));
    }

    #[test]
    fn metadata_sorts_by_key_bytes() {
        let m = Metadata::try_from_pairs([
            ("é".to_string(), "3".to_string()),
            ("z".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ])
        .unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "z", "é"]);
    }

    #[test]
    fn payload_limit() {
        assert_eq!(check_payload(10, 10), Ok(()));
        assert_eq!(check_payload(11, 10), Err(PayloadTooLarge { len: 11, max: 10 }));
    }
}

/// Checks a Lamport clock a client sent or a snapshot holds against [`LAMPORT_CLOCK_MAX`].
pub fn check_lamport(value: u64) -> Result<LamportTime, ValidationError> {
    if value > LAMPORT_CLOCK_MAX {
        return Err(ValidationError::LamportClock { value, max: LAMPORT_CLOCK_MAX });
    }
    Ok(LamportTime(value))
}

#[cfg(test)]
mod lamport_tests {
    use super::*;

    #[test]
    fn lamport_clocks_stay_below_two_to_the_62() {
        assert_eq!(check_lamport(0), Ok(LamportTime(0)));
        assert_eq!(check_lamport((1 << 62) - 1), Ok(LamportTime((1 << 62) - 1)));
        for value in [1 << 62, u64::MAX - 1, u64::MAX] {
            let err = check_lamport(value).unwrap_err();
            assert!(err.to_string().contains("below 2^62"), "{err}");
        }
    }
}
