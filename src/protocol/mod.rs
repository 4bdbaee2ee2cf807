//! The Kafka wire protocol at the edge of the broker: frames, the API versions we serve and
//! the one mapping from internal errors to Kafka error codes. Message bodies are encoded and
//! decoded by the `kafka-protocol` crate.

pub mod errors;
pub mod frame;
pub mod records;
pub mod versions;
