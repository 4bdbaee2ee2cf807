//! The one place where internal errors become Kafka error codes. Handlers call these at the
//! edge, when they build a response; nothing below them knows Kafka's codes.

use kafka_protocol::ResponseError;

use crate::partition::PartitionError;
use crate::storage::StorageError;
use crate::storage::producer_state::SequenceError;

/// An owner's answer for one partition of a scattered request, or the code it was refused
/// with before it travelled: either way, what the response says for that partition.
pub fn owner_answer<R>(outcome: Result<Result<R, PartitionError>, ResponseError>) -> Result<R, ResponseError> {
    outcome.and_then(|answer| answer.map_err(|e| partition_error_code(&e)))
}

pub fn partition_error_code(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::Unknown => ResponseError::UnknownTopicOrPartition,
        // As Kafka answers for a replica on a failed log directory.
        PartitionError::Offline => ResponseError::KafkaStorageError,
        PartitionError::SyncFailed => ResponseError::KafkaStorageError,
        PartitionError::Storage(e) => storage_error_code(e),
        PartitionError::Sequence(SequenceError::NegativeSequence) => ResponseError::InvalidRecord,
        PartitionError::Sequence(SequenceError::StaleEpoch) => ResponseError::InvalidProducerEpoch,
        PartitionError::Sequence(SequenceError::OutOfOrder) => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::Transactional => ResponseError::InvalidRecord,
        PartitionError::BeyondHighWatermark { .. } => ResponseError::OffsetOutOfRange,
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
        PartitionError::ReplicationTimedOut => ResponseError::RequestTimedOut,
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
    }
}

fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::CorruptBatch(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        StorageError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        StorageError::DecompressedTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        StorageError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // A fetch loads what was not cached and reads again; it never answers this.
        StorageError::Io(_) | StorageError::NotCached { .. } => ResponseError::KafkaStorageError,
    }
}

/// The wire form of an optional error: 0 means none.
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_errors_get_kafkas_codes() {
        let io = || StorageError::Io(std::io::Error::other("disk"));
        let cases = [
            (PartitionError::Unknown, ResponseError::UnknownTopicOrPartition),
            (PartitionError::Offline, ResponseError::KafkaStorageError),
            (PartitionError::Storage(io()), ResponseError::KafkaStorageError),
            (PartitionError::Storage(StorageError::CorruptBatch("crc".into())), ResponseError::CorruptMessage),
            (PartitionError::Storage(StorageError::BatchTooLarge { size: 2, max: 1 }), ResponseError::MessageTooLarge),
            (
                PartitionError::Storage(StorageError::OffsetOutOfRange {
                    offset: 9,
                    log_start_offset: 0,
                    log_end_offset: 1,
                }),
                ResponseError::OffsetOutOfRange,
            ),
            (PartitionError::Sequence(SequenceError::NegativeSequence), ResponseError::InvalidRecord),
            (PartitionError::Sequence(SequenceError::StaleEpoch), ResponseError::InvalidProducerEpoch),
            (PartitionError::Sequence(SequenceError::OutOfOrder), ResponseError::OutOfOrderSequenceNumber),
            (PartitionError::Transactional, ResponseError::InvalidRecord),
            (PartitionError::BeyondHighWatermark { offset: 5, high_watermark: 4 }, ResponseError::OffsetOutOfRange),
            (PartitionError::FencedLeaderEpoch { requested: 1, current: 2 }, ResponseError::FencedLeaderEpoch),
            (PartitionError::NotLeader, ResponseError::NotLeaderOrFollower),
            (
                PartitionError::NotEnoughReplicasAfterAppend { isr: 1, min_insync_replicas: 2 },
                ResponseError::NotEnoughReplicasAfterAppend,
            ),
            (PartitionError::ReplicationTimedOut, ResponseError::RequestTimedOut),
            (PartitionError::UnknownLeaderEpoch { requested: 3, current: 2 }, ResponseError::UnknownLeaderEpoch),
        ];
        for (error, code) in cases {
            assert_eq!(partition_error_code(&error), code, "{error:?}");
        }
    }
}
