//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::storage::StorageError;

pub fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::CorruptBatch(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        StorageError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        StorageError::DecompressedTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        StorageError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Io(_) => ResponseError::KafkaStorageError,
    }
}

/// The wire form of an optional error: 0 means none.
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}
