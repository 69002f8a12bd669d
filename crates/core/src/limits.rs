//! Every bound of CONTRACT §2, as named constants, and the two that a deployment may set.
//!
//! A limit exists so that one careless or hostile request cannot take memory, disk or index
//! space from everyone else. Each constant says why it has the value it has.

/// Longest `context_id`, in bytes. The original ledger accepted ids of 1,000 characters and
/// clients that used them must keep working; 1 KiB allows that while keeping index keys short.
pub const CONTEXT_ID_BYTES_MAX: usize = 1024;

/// Longest entry `key`, in bytes. Keys are indexed per context, so they are bounded like ids.
pub const KEY_BYTES_MAX: usize = 1024;

/// Longest `append_id`, in bytes. Room for a UUID, a ULID or a short composite id; every
/// recorded id is kept for the life of its context, so it must stay small.
pub const APPEND_ID_BYTES_MAX: usize = 128;

/// Most metadata pairs on one entry. Metadata is for labels (agent, cycle, tool), not data.
pub const METADATA_PAIRS_MAX: usize = 64;

/// Most metadata bytes on one entry, keys and values together. Bulk data belongs in the
/// payload, whose limit is explicit and configurable.
pub const METADATA_BYTES_MAX: usize = 64 * 1024;

/// Largest `received_lamport_clock` an append may carry, and largest Lamport clock a loaded
/// snapshot may hold: `2^62 − 1` (CONTRACT §2). A context's clock then moves past a received
/// value by one per append, so it stays about 2^63 appends from overflow whatever clients send:
/// no value can make later appends to a context fail.
pub const LAMPORT_CLOCK_MAX: u64 = (1 << 62) - 1;

/// Default largest payload, in bytes (CONTRACT §2: 4 MiB by default).
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// The highest payload limit a deployment may configure. Records carry 32-bit lengths and an
/// entry is held in memory whole while it is written and watched; 64 MiB keeps both safe.
pub const PAYLOAD_BYTES_MAX_CEILING: usize = 64 * 1024 * 1024;

/// Default largest Get or Snapshot response, in bytes. A response is built in memory before
/// it is sent; larger results must be paged with `after_sequence` and `limit`.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// The limits a deployment may choose; everything else above is fixed by the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted by Append (and in a loaded snapshot), in bytes.
    pub payload_bytes_max: usize,
    /// Largest Get or Snapshot response, in bytes.
    pub response_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
        }
    }
}

/// A configured limit is outside what the ledger can honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The payload limit is zero or above [`PAYLOAD_BYTES_MAX_CEILING`].
    #[error("the payload limit must be between 1 and {PAYLOAD_BYTES_MAX_CEILING} bytes, got {0}")]
    PayloadBytesMax(usize),
    /// The response limit cannot hold even one entry of the largest allowed payload.
    #[error(
        "the response limit ({response} bytes) must be at least the payload limit ({payload} bytes), or the largest entries could never be read"
    )]
    ResponseBytesMax {
        /// The configured response limit.
        response: usize,
        /// The configured payload limit.
        payload: usize,
    },
}

impl Limits {
    /// Checks that the limits can be honoured together.
    pub fn validate(self) -> Result<Self, LimitsError> {
        if self.payload_bytes_max == 0 || self.payload_bytes_max > PAYLOAD_BYTES_MAX_CEILING {
            return Err(LimitsError::PayloadBytesMax(self.payload_bytes_max));
        }
        if self.response_bytes_max < self.payload_bytes_max {
            return Err(LimitsError::ResponseBytesMax {
                response: self.response_bytes_max,
                payload: self.payload_bytes_max,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(Limits::default()));
    }

    #[test]
    fn rejects_impossible_limits() {
        let zero = Limits { payload_bytes_max: 0, ..Limits::default() };
        assert_eq!(zero.validate(), Err(LimitsError::PayloadBytesMax(0)));
        let huge = Limits { payload_bytes_max: PAYLOAD_BYTES_MAX_CEILING + 1, ..Limits::default() };
        assert!(matches!(huge.validate(), Err(LimitsError::PayloadBytesMax(_))));
        let small = Limits { payload_bytes_max: 10, response_bytes_max: 9 };
        let err = small.validate().unwrap_err();
        assert!(err.to_string().contains("could never be read"), "{err}");
    }
}
