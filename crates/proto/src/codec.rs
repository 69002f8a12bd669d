//! The protobuf codec every generated client and server uses: prost's, except that a request
//! that does not decode is the caller's mistake.
//!
//! tonic's prost codec turns every decode failure into `INTERNAL`, which monitoring reads as a
//! server bug. A request whose bytes are not its message, or whose `context_id` or `key` is not
//! UTF-8 (clients in languages that do not check send such bytes), gets `INVALID_ARGUMENT`
//! here, with prost's description, which names the field (CONTRACT §2, errors). A *response*
//! that does not decode is still `INTERNAL`: that one is the server's fault. Requests are told
//! from responses by their message name (every request message of the proto ends in
//! `Request`), which a test checks against the descriptors.
//!
//! Watch events are encoded into a larger buffer than other messages: see
//! [`WATCH_BUFFER_BYTES`].

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::watch_event::WatchEvent;

/// The buffer a watch stream's events are encoded into. tonic gathers a stream's ready
/// messages into one buffer until it holds [`WATCH_YIELD_BYTES`], hands that much to HTTP/2
/// and goes on in the rest of the same allocation; when it runs out, it allocates another
/// of this size. With tonic's default of 8 KiB, every 32 KiB of 1 KiB events was copied
/// twice more as the buffer doubled to hold them (a tenth of the server's work with a
/// thousand watchers). At 64 KiB with a yield of 30 KiB, two such chunks fit and a new
/// allocation copies at most one partly written event. A stream that went idle keeps at most
/// this one allocation.
pub const WATCH_BUFFER_BYTES: usize = 64 * 1024;

/// See [`WATCH_BUFFER_BYTES`].
pub const WATCH_YIELD_BYTES: usize = 30 * 1024;

/// prost's codec with request decode failures mapped to `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct LedgerCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for LedgerCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for LedgerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = LedgerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(encode_settings::<T>())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LedgerDecoder { _type: PhantomData }
    }
}

/// Decodes `U`; see the module doc for the status of a failure.
#[derive(Debug, Clone)]
pub struct LedgerDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for LedgerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|err| decode_failure::<U>(&err))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// How messages of type `T` are buffered as they are encoded.
fn encode_settings<T: 'static>() -> BufferSettings {
    if TypeId::of::<T>() == TypeId::of::<WatchEvent>() {
        BufferSettings::new(WATCH_BUFFER_BYTES, WATCH_YIELD_BYTES)
    } else {
        BufferSettings::default()
    }
}

/// Whether `U` is a request message (decoded by a server).
pub fn is_request<U>() -> bool {
    std::any::type_name::<U>().ends_with("Request")
}

fn decode_failure<U>(err: &prost::DecodeError) -> Status {
    if is_request::<U>() {
        Status::invalid_argument(format!(
            "the request is not a valid protobuf message of its type ({err}); string fields such as context_id and key must be UTF-8"
        ))
    } else {
        Status::internal(format!("the response did not decode: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{AppendRequest, AppendResponse};

    fn decode<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
        U::decode(bytes).map_err(|err| decode_failure::<U>(&err))
    }

    #[test]
    fn a_request_that_does_not_decode_is_invalid_argument_naming_the_field() {
        // Field 1 (context_id), length 2, bytes that are not UTF-8.
        let status = decode::<AppendRequest>(&[0x0a, 0x02, 0xff, 0xfe]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("context_id"), "{}", status.message());
        let status = decode::<AppendRequest>(&[0x0a, 0x09, 0x01]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "truncated");
    }

    /// The rule that tells requests from responses holds for every RPC of the proto.
    #[test]
    fn every_rpc_takes_a_request_message_and_returns_something_else() {
        let proto = include_str!("../proto/converge/context/v1/context.proto");
        let mut rpcs = 0;
        for line in proto.lines().map(str::trim).filter(|l| l.starts_with("rpc ")) {
            let names: Vec<&str> = line
                .split(['(', ')'])
                .skip(1)
                .step_by(2)
                .map(|n| n.trim().trim_start_matches("stream ").trim())
                .collect();
            assert_eq!(names.len(), 2, "{line}");
            assert!(names[0].ends_with("Request"), "{line}: the input must be a *Request");
            assert!(!names[1].ends_with("Request"), "{line}: the output must not be a *Request");
            rpcs += 1;
        }
        assert!(rpcs >= 8, "found {rpcs} rpcs");
    }

    #[test]
    fn a_response_that_does_not_decode_is_internal() {
        let status = decode::<AppendResponse>(&[0x0a, 0x09, 0x01]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
