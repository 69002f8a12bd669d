//! `message WatchEvent { Entry entry = 1; }`, written by hand so one encoding can serve every
//! watcher of an entry.
//!
//! A thousand watchers of a context receive the same entry a thousand times. Encoding it
//! field by field each time (its id as hex, its key, metadata and hash copied into new
//! allocations, then into the response) was a fifth of the server's work in the fan-out
//! bench. [`WatchEvent::encode_entry`] encodes an entry once; [`WatchEvent::encoded`] wraps
//! that encoding so sending it to another watcher is one copy of its bytes into the
//! response. Decoding is prost's, into [`WatchEvent::entry`], so clients see the generated
//! message's shape. The build maps the proto's `WatchEvent` to this type (`extern_path`), and
//! a test checks both encodings against the generated message's.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, message, skip_field};

use crate::v1;

/// The `entry` field's number.
const ENTRY_TAG: u32 = 1;

/// A watch event: decoded, or made from an encoding shared with other watchers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchEvent {
    /// The entry, when the event was decoded or built from one.
    pub entry: Option<v1::Entry>,
    /// The message's encoding, when it was made ahead; sent instead of `entry`.
    encoded: Option<Bytes>,
}

impl WatchEvent {
    /// An event carrying `entry`.
    pub fn new(entry: v1::Entry) -> Self {
        Self { entry: Some(entry), encoded: None }
    }

    /// The encoding of an event carrying `entry`, to hand to [`WatchEvent::encoded`] as many
    /// times as there are watchers.
    pub fn encode_entry(entry: &v1::Entry) -> Bytes {
        let mut buf = Vec::with_capacity(message::encoded_len(ENTRY_TAG, entry));
        message::encode(ENTRY_TAG, entry, &mut buf);
        Bytes::from(buf)
    }

    /// An event sent as `encoding` (from [`WatchEvent::encode_entry`]), unchanged.
    pub fn encoded(encoding: Bytes) -> Self {
        Self { entry: None, encoded: Some(encoding) }
    }
}

impl prost::Message for WatchEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded, &self.entry) {
            (Some(encoded), _) => buf.put_slice(encoded),
            (None, Some(entry)) => message::encode(ENTRY_TAG, entry, buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == ENTRY_TAG {
            let entry = self.entry.get_or_insert_with(Default::default);
            message::merge(wire_type, entry, buf, ctx).map_err(|mut err| {
                err.push("WatchEvent", "entry");
                err
            })
        } else {
            skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        match (&self.encoded, &self.entry) {
            (Some(encoded), _) => encoded.len(),
            (None, Some(entry)) => message::encoded_len(ENTRY_TAG, entry),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.entry = None;
        self.encoded = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The generated shape of the proto's message, for comparison.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, optional, tag = "1")]
        entry: Option<v1::Entry>,
        #[prost(string, tag = "9")]
        unknown: String,
    }

    fn entry() -> v1::Entry {
        v1::Entry {
            id: "00112233445566778899aabbccddeeff".into(),
            key: "facts".into(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            sequence: 7,
            appended_at_ns: 1_700_000_000_000_000_000,
            metadata: [("a".to_string(), "b".to_string())].into(),
            lamport_clock: 12,
            content_hash: Bytes::from(vec![9; 32]),
        }
    }

    #[test]
    fn both_encodings_are_the_generated_messages() {
        let generated = Generated { entry: Some(entry()), unknown: String::new() }.encode_to_vec();
        assert_eq!(WatchEvent::new(entry()).encode_to_vec(), generated);
        let shared = WatchEvent::encode_entry(&entry());
        assert_eq!(shared, generated);
        let event = WatchEvent::encoded(shared);
        assert_eq!(event.encoded_len(), generated.len());
        assert_eq!(event.encode_to_vec(), generated);
        assert_eq!(WatchEvent::default().encode_to_vec(), Vec::<u8>::new());
    }

    #[test]
    fn decodes_the_entry_and_skips_unknown_fields() {
        let bytes = Generated { entry: Some(entry()), unknown: "later".into() }.encode_to_vec();
        let event = WatchEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(event.entry, Some(entry()));
        assert_eq!(WatchEvent::decode(&[][..]).unwrap().entry, None);
        let err = WatchEvent::decode(&[0x0a, 0x05, 0x0a][..]).unwrap_err();
        assert!(err.to_string().contains("WatchEvent.entry"), "{err}");
    }
}
