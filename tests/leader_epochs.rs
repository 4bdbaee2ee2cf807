//! Leader epochs on the real broker: each partition keeps Kafka's `leader-epoch-checkpoint`,
//! OffsetForLeaderEpoch answers from it, and after a `kill -9` it answers the same, rebuilding
//! the checkpoint from the batches when the file is gone. (Edge cases are compared with Apache
//! Kafka in `tests/differential.rs`; the Java consumer's validation is in `tests/java_client.rs`.)

mod common;

use common::{Broker, Raw, batch};

#[test]
fn the_checkpoint_survives_a_kill_and_is_rebuilt_when_lost() {
    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("epochs", 2, &[("segment.bytes", "1024")]), 0);
    for i in 0..40 {
        let value = format!("record-{i}").into_bytes();
        assert_eq!(raw.produce("epochs", 0, batch(&[&value, &value]), -1).0, 0);
    }
    let data_dir = broker.data_dir().to_path_buf();
    let dir = |partition: i32| data_dir.join(format!("epochs-{partition}"));
    let checkpoint = |partition: i32| std::fs::read_to_string(dir(partition).join("leader-epoch-checkpoint")).unwrap();
    // Both partitions lead in epoch 0 from their start, the empty one too.
    assert_eq!(checkpoint(0), "0\n1\n0 0\n");
    assert_eq!(checkpoint(1), "0\n1\n0 0\n");
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, 0), (0, 0, 80));
    assert_eq!(raw.end_offset_for_epoch("epochs", 1, 0), (0, 0, 0));
    drop(raw);

    broker.kill9();
    std::fs::remove_file(dir(0).join("leader-epoch-checkpoint")).unwrap();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    // The restart's registration fenced the old incarnation (no leader) and unfenced the new
    // one (leader again): each a leadership change, as in KRaft, so the epoch moved on.
    let epoch = leader_epoch(&mut raw, "epochs", 0);
    assert!(epoch > 0, "a new leader epoch after the restart, not {epoch}");
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, 0), (0, 0, 80));
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, epoch), (0, epoch, 80));
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, epoch + 1), (0, -1, -1), "an epoch after the last");
    // The checkpoint file follows the cache off the shard's thread.
    let rebuilt = format!("0\n2\n0 0\n{epoch} 80\n");
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the checkpoint is rebuilt from the batches, then gains the new epoch",
        || std::fs::read_to_string(dir(0).join("leader-epoch-checkpoint")).is_ok_and(|c| c == rebuilt),
    );
    // Appends go on in the new epoch.
    assert_eq!(raw.produce("epochs", 0, batch(&[b"after"]), -1), (0, 80));
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, 0), (0, 0, 80));
    assert_eq!(raw.end_offset_for_epoch("epochs", 0, epoch), (0, epoch, 81));
}

/// The leader epoch of `topic`-`partition` in the broker's Metadata.
fn leader_epoch(raw: &mut Raw, topic: &str, partition: i32) -> i32 {
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let wanted = MetadataRequestTopic::default().with_name(Some(common::topic_name(topic)));
    let response = raw.send(&MetadataRequest::default().with_topics(Some(vec![wanted])), 12);
    response.topics[0].partitions.iter().find(|p| p.partition_index == partition).expect("the partition").leader_epoch
}
