//! CreateTopics and CreatePartitions sent to a broker that is not the active controller are
//! forwarded to it (KIP-590): the controller validates them, resolves the defaults and places
//! the replicas on its own image (one that knows every registered broker), and the receiving
//! broker answers once it has the change too.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;

#[test]
fn topics_created_through_a_follower_are_made_by_the_active_controller() {
    let _serial = common::serial();
    let mut cluster = Cluster::start(3, 1, &["--set", "num.partitions=2"]);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    // A follower of the quorum, restarted with another default partition count.
    let controller = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let follower = (controller + 1) % 3;
    cluster.node_mut(follower).terminate();
    cluster.node_mut(follower).add_args(&["--set", "num.partitions=5"]);
    cluster.node_mut(follower).restart();
    cluster.wait_for_every_broker(Duration::from_secs(30));
    assert_eq!(cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10)), controller);

    // Default partition count and replication factor: the controller's.
    let topic = CreatableTopic::default()
        .with_name(common::topic_name("defaults"))
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    let request = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000);
    let response = cluster.connect(follower).send(&request, 7);
    let created = &response.topics[0];
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    assert_eq!((created.num_partitions, created.replication_factor), (2, 1));
    // The follower answered once it had the topic: it names a leader of every partition.
    assert_eq!(cluster.leaders_seen_by(follower, "defaults").len(), 2);

    // CreatePartitions through the follower too.
    let mut admin = sluice::client::Client::connect(cluster.node(follower).addr()).unwrap();
    admin.create_partitions("defaults", 4).unwrap();
    assert_eq!(cluster.leaders_seen_by(follower, "defaults").len(), 4);
    for i in 0..3 {
        common::wait_until(Duration::from_secs(10), "every node has the new partitions", || {
            cluster.leaders_seen_by(i, "defaults").len() == 4
        });
    }
}
