//! Protobuf messages for Loki push (`logproto`), decoded with prost. The sink encodes pushes by
//! hand (see `sinks::loki::encode`); these types are the reference the encoder is tested
//! against and what the test receiver decodes with. [`wire`] holds the varint and field
//! primitives that the hand-written encoders share.

pub mod logproto;
pub mod remote_write;
pub mod wire;
