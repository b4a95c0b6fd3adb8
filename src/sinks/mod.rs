//! Sinks: where entries go. Each takes batches from its own bounded queue and settles their
//! acknowledgement tokens when it is done with them.

pub mod console;
pub mod http_client;
pub mod loki;
pub mod otlp;
pub mod remote_write;
pub mod retry;
