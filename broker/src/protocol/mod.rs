//! The Kafka wire protocol: which APIs and versions are served, and framing of requests and
//! responses through the `kafka-protocol` crate.

pub mod codec;
pub mod versions;

pub use codec::{decode_body, decode_request, encode_response, DecodeError, RequestFrame};
