//! A node that comes to lead a `__consumer_offsets` partition loads its groups' committed
//! offsets before it answers for them: meanwhile their requests get
//! COORDINATOR_LOAD_IN_PROGRESS (14), as from Kafka's coordinator, on whichever shard they
//! arrive, and so does a ListGroups of the node; never an answer from the groups not loaded yet.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, FAST_SESSIONS};
use kafka_protocol::messages::{GroupId, ListGroupsRequest, OffsetFetchRequest};
use kafka_protocol::protocol::StrBytes;

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const GROUP: &str = "loading-group";

/// OffsetFetch v7 of every offset of `GROUP` through node `i`: the group-level error, or the
/// committed offsets as (partition, offset).
fn fetch_offsets(cluster: &Cluster, i: usize) -> Result<Vec<(i32, i64)>, i16> {
    let request =
        OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str(GROUP))).with_topics(None);
    let response = cluster.connect(i).send(&request, 7);
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset)))
        .collect())
}

/// ListGroups v5 through node `i`: the error, or the ids of the groups listed.
fn list_groups(cluster: &Cluster, i: usize) -> Result<Vec<String>, i16> {
    let response = cluster.connect(i).send(&ListGroupsRequest::default(), 5);
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    Ok(response.groups.iter().map(|g| g.group_id.0.to_string()).collect())
}

#[test]
fn a_coordinator_answers_load_in_progress_until_its_groups_are_loaded() {
    let _serial = common::serial();
    // Two shards a node: each poll's fresh connection lands on either, the loading one or not.
    let rebalance_often = ["--set", "leader.imbalance.check.interval.seconds=1"];
    let mut cluster = Cluster::start(3, 2, &[&FAST_SESSIONS[..], &rebalance_often[..]].concat());
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere("t", 1, 1, &[]);
    let coordinator = cluster.coordinator(0, GROUP);
    // The node's Metadata named the topic, but the shard coordinating the group applies each
    // image on its own and may not have it yet: UNKNOWN_TOPIC_OR_PARTITION, which clients
    // retry, as Kafka's consumer does.
    let mut client = sluice::client::Client::connect(cluster.node(coordinator).addr()).unwrap();
    common::wait_until(Duration::from_secs(10), "the coordinator takes the commit", || {
        match client.commit_offsets(GROUP, "t", &[(0, 42)]) {
            Ok(()) => true,
            Err(e) if e.to_string().contains("(error code 3)") => false,
            Err(e) => panic!("{e:#}"),
        }
    });

    // Restarted with its loads held 3 s: once back in the ISR, it is the preferred leader of
    // the group's offsets partition again, and loads it.
    cluster.node_mut(coordinator).kill9();
    cluster.node_mut(coordinator).set_env("SLUICE_TEST_OFFSETS_LOAD_DELAY_MS", "3000");
    cluster.node_mut(coordinator).restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut loading_answers = 0;
    let mut loading_lists = 0;
    let mut seen_loading = false;
    loop {
        assert!(Instant::now() < deadline, "the coordinator never answered with the commit");
        if cluster.coordinator(0, GROUP) != coordinator {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let fetched = fetch_offsets(&cluster, coordinator);
        seen_loading |= fetched == Err(COORDINATOR_LOAD_IN_PROGRESS);
        // Once the group's partition is seen loading, a list is whole or not given at all.
        match list_groups(&cluster, coordinator) {
            Err(COORDINATOR_LOAD_IN_PROGRESS) => loading_lists += 1,
            Err(other) => panic!("ListGroups answered {other}"),
            Ok(groups) => assert!(!seen_loading || groups.contains(&GROUP.to_string()), "listed {groups:?} mid-load"),
        }
        match fetched {
            Err(COORDINATOR_LOAD_IN_PROGRESS) => loading_answers += 1,
            // Not its coordinator yet (its own image behind), or nothing to answer from yet.
            Err(15 | 16) => {}
            Err(other) => panic!("OffsetFetch answered {other}"),
            Ok(offsets) => {
                assert_eq!(offsets, [(0, 42)], "answered before its groups were loaded");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(loading_answers > 0, "no request arrived during the load");
    assert!(loading_lists > 0, "ListGroups never answered COORDINATOR_LOAD_IN_PROGRESS during the load");
    // The node's other offsets partitions may still be loading: 14 until they are.
    common::wait_until(Duration::from_secs(30), "ListGroups lists the loaded group", || {
        match list_groups(&cluster, coordinator) {
            Err(COORDINATOR_LOAD_IN_PROGRESS) => false,
            Err(other) => panic!("ListGroups answered {other}"),
            Ok(groups) => {
                assert!(groups.contains(&GROUP.to_string()), "the loaded group is not listed: {groups:?}");
                true
            }
        }
    });
    println!("{loading_answers} OffsetFetch and {loading_lists} ListGroups answered COORDINATOR_LOAD_IN_PROGRESS");
}
