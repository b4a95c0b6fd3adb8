//! The Loki sink: batches per tenant, protobuf + snappy pushes, retries, acknowledgements.

pub mod config;
