//! The controller: the single writer of the metadata image, on shard 0.
//!
//! A change is: validate, build the next image, propose the records that make it to the
//! metadata log (`cluster::quorum`), and answer once they are committed and the image is
//! installed on every shard (each opens or deletes the partitions it owns). Changes are
//! serialised by `controller_lock`, held until the change is installed, so that each one is
//! validated against the image its predecessor left. Installs (of committed images, and of
//! partitions found offline) are serialised by `install_lock`, and each carries the offline
//! marks of this run. CreateTopics and CreatePartitions are made on the active controller's
//! image only: the controller shard of any other broker forwards them there (KIP-590).

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId,
    BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::placement::shard_for_partition;
use super::router::{ApplyMetadata, NewTopic, PartitionGrowth, ReassignmentTargets, TopicOutcome};
use super::{CONTROLLER_SHARD, Shard, TopicPartition};
use crate::cluster::configs::{self, Alteration, ConfigResource};
use crate::cluster::election::{self, Elected, Election, IsrProposal, IsrRefusal};
use crate::cluster::quorum::ProposeError;
use crate::cluster::reassignment;
use crate::cluster::records::{self, MetadataRecord};
use crate::cluster::replicas::{self, Candidate, Start};
use crate::cluster::{BrokerRegistration, MetadataImage, PartitionMetadata, TopicMetadata, is_legal_topic_name};
use crate::runtime::Permit;

type TopicResult = (String, TopicOutcome);
/// A topic's answer as the controller gave it to a forwarded call: `T`, or an error and message.
type ForwardedResult<T> = (String, Result<T, (ResponseError, String)>);

/// More partitions than this in one topic is surely a typo, and would exhaust file handles.
const PARTITIONS_MAX: i32 = 100_000;
/// How often the active controller looks for reassignments whose new replicas are all in sync.
const REASSIGNMENT_CHECK_PERIOD: Duration = Duration::from_millis(100);
/// A forwarded CreateTopics' own timeout, as the controller's proposal's.
const FORWARDED_TIMEOUT_MS: i32 = 5_000;
/// How long a broker that forwarded a change waits to install it before it answers anyway.
const FORWARDED_INSTALL_WAIT: Duration = Duration::from_secs(5);

/// CreateTopics: on the active controller, placed and validated against its image; on any
/// other broker, forwarded to it (KIP-590), since this node's image may lag (a broker
/// registered that it has not heard of yet, or just restarted), and answered once this node
/// has the topics too.
pub async fn create_topics(shard: &Rc<Shard>, topics: Vec<NewTopic>, validate_only: bool) -> Vec<TopicResult> {
    match forwarder(shard) {
        Some(lifecycle) => {
            let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
            let request = CreateTopicsRequest::default()
                .with_topics(topics.iter().map(creatable_topic).collect())
                .with_timeout_ms(FORWARDED_TIMEOUT_MS)
                .with_validate_only(validate_only);
            let answered = lifecycle.create_topics(request).await.map(|response| {
                let results = response.topics.into_iter().map(|t| {
                    let outcome = outcome(t.error_code, t.error_message.as_deref());
                    (t.name.0.to_string(), outcome.map(|()| t.topic_id))
                });
                results.collect::<Vec<_>>()
            });
            let results = forwarded_outcomes(names, answered);
            let made = results.iter().filter_map(|(name, r)| Some((name.clone(), *r.as_ref().ok()?)));
            let made: Vec<(String, uuid::Uuid)> = made.filter(|_| !validate_only).collect();
            known_here(shard, |image| {
                made.iter().all(|(name, id)| image.topic(name).is_some_and(|t| t.topic_id == *id))
            })
            .await;
            results.into_iter().map(|(name, r)| (name, r.map(|_| ()))).collect()
        }
        None => create_topics_here(shard, topics, validate_only).await,
    }
}

/// A CreateTopics another broker forwarded: created as one received here, and answered with
/// each topic's id.
pub async fn forwarded_create_topics(shard: &Rc<Shard>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = request.topics.into_iter().map(new_topic).collect();
    let results = create_topics_here(shard, topics, request.validate_only).await;
    let image = shard.metadata();
    let topics = results.into_iter().map(|(name, outcome)| {
        let result = CreatableTopicResult::default().with_name(TopicName(StrBytes::from_string(name.clone())));
        match outcome {
            Ok(()) => result.with_topic_id(image.topic(&name).map(|t| t.topic_id).unwrap_or_default()),
            Err((error, message)) => {
                result.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
            }
        }
    });
    CreateTopicsResponse::default().with_topics(topics.collect())
}

/// A [`NewTopic`] as a forwarded CreateTopics carries it.
fn creatable_topic(topic: &NewTopic) -> CreatableTopic {
    let assignments = topic.assignments.iter().flatten().enumerate().map(|(partition, replicas)| {
        CreatableReplicaAssignment::default()
            .with_partition_index(partition as i32)
            .with_broker_ids(replicas.iter().map(|&id| BrokerId(id)).collect())
    });
    let configs = topic.configs.iter().map(|(name, value)| {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_string(name.clone()))
            .with_value(Some(StrBytes::from_string(value.clone())))
    });
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
        .with_num_partitions(topic.partitions)
        .with_replication_factor(topic.replication_factor)
        .with_assignments(assignments.collect())
        .with_configs(configs.collect())
}

/// The [`NewTopic`] that [`creatable_topic`] carried.
fn new_topic(topic: CreatableTopic) -> NewTopic {
    let assigned = !topic.assignments.is_empty();
    NewTopic {
        name: topic.name.0.to_string(),
        partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments: assigned.then(|| {
            topic.assignments.into_iter().map(|a| a.broker_ids.into_iter().map(|id| id.0).collect()).collect()
        }),
        configs: topic.configs.into_iter().filter_map(|c| Some((c.name.to_string(), c.value?.to_string()))).collect(),
    }
}

/// The lifecycle to forward this node's CreateTopics and CreatePartitions through: `None` on
/// the active controller (or with no broker lifecycle, or no leader known: then the change is
/// made here and its proposal goes to whichever leader raft-rs knows).
fn forwarder(shard: &Shard) -> Option<Rc<crate::cluster::brokers::Lifecycle>> {
    let led_elsewhere = shard.quorum.get().is_some_and(|q| q.leader().is_some() && !q.is_leader());
    shard.lifecycle.get().filter(|_| led_elsewhere).cloned()
}

/// A forwarded call's answer per topic, in request order: a topic the controller did not
/// answer for, or a call that failed, gets NOT_CONTROLLER (retriable).
fn forwarded_outcomes<T>(
    names: Vec<String>,
    answered: Result<Vec<ForwardedResult<T>>, String>,
) -> Vec<ForwardedResult<T>> {
    let mut answered = match answered {
        Ok(answered) => answered.into_iter().collect::<std::collections::HashMap<_, _>>(),
        Err(e) => {
            let refused =
                |name| (name, Err((ResponseError::NotController, format!("forwarding to the controller: {e}"))));
            return names.into_iter().map(refused).collect();
        }
    };
    let missing = || Err((ResponseError::NotController, "the controller did not answer for it".to_string()));
    names.into_iter().map(|name| (name.clone(), answered.remove(&name).unwrap_or_else(missing))).collect()
}

/// An error code and message as a [`TopicOutcome`].
fn outcome(code: i16, message: Option<&str>) -> TopicOutcome {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err((error, message.unwrap_or_default().to_string())),
    }
}

/// Waits until this node's image satisfies `known` (a forwarded change has reached it), up
/// to [`FORWARDED_INSTALL_WAIT`]: the client then finds what it made here.
async fn known_here(shard: &Shard, known: impl Fn(&MetadataImage) -> bool) {
    let Some(quorum) = shard.quorum.get() else { return };
    let deadline = Instant::now() + FORWARDED_INSTALL_WAIT;
    while !known(&shard.metadata()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !quorum.installed_newer(left).await {
            return;
        }
    }
}

async fn create_topics_here(shard: &Rc<Shard>, topics: Vec<NewTopic>, validate_only: bool) -> Vec<TopicResult> {
    let (_permit, mut image) = begin_change(shard).await;
    let mut results = Vec::with_capacity(topics.len());
    let mut changed = false;
    for topic in topics {
        let result = validate_new_topic(shard, &image, &topic);
        if let Ok(replicas) = &result
            && !validate_only
        {
            let partitions = (0..)
                .zip(replicas.clone())
                .map(|(partition, replicas)| {
                    PartitionMetadata::new(
                        partition,
                        shard_for_partition(&topic.name, partition, shard.shard_count),
                        replicas,
                    )
                })
                .collect();
            image.topics.insert(
                topic.name.clone(),
                TopicMetadata {
                    name: topic.name.clone(),
                    topic_id: uuid::Uuid::new_v4(),
                    partitions,
                    configs: topic.configs,
                },
            );
            changed = true;
        }
        results.push((topic.name, result.map(|_| ())));
    }
    if changed {
        publish_for(shard, image, &mut results).await;
    }
    results
}

/// Validates a new topic; returns the replicas of each of its partitions.
fn validate_new_topic(
    shard: &Shard,
    image: &MetadataImage,
    topic: &NewTopic,
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    let name = &topic.name;
    // The defaults (-1) are this controller's.
    let partitions = if topic.partitions == -1 { shard.config.num_partitions } else { topic.partitions };
    let replication_factor = if topic.replication_factor == -1 { 1 } else { topic.replication_factor };
    if !is_legal_topic_name(name) {
        return Err((ResponseError::InvalidTopicException, format!("illegal topic name {name:?}")));
    }
    if image.topics.contains_key(name) {
        return Err((ResponseError::TopicAlreadyExists, format!("topic {name:?} already exists")));
    }
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err((ResponseError::InvalidPartitions, format!("partitions must be between 1 and {PARTITIONS_MAX}")));
    }
    if let Some(key) = topic.configs.keys().find(|k| !crate::config::is_topic_config(k)) {
        return Err((ResponseError::InvalidConfig, format!("unknown topic config {key:?}")));
    }
    let effective = shard.effective_config();
    effective.log_config(&topic.configs).map_err(|e| (ResponseError::InvalidConfig, format!("{e:#}")))?;
    match &topic.assignments {
        Some(assignments) => {
            check_assignments(image, assignments)?;
            Ok(assignments.clone())
        }
        None => place(shard, image, partitions, replication_factor, 0),
    }
}

/// Replicas for partitions `first..first + count` over the unfenced brokers (Kafka's
/// placement, from a random start), or Kafka's refusal when there are too few of them.
fn place(
    shard: &Shard,
    image: &MetadataImage,
    count: i32,
    replication_factor: i16,
    first: i32,
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    let brokers = candidates(image);
    let wanted = replication_factor.max(1) as usize;
    if wanted > brokers.len() && shard.quorum.get().is_none_or(|q| q.leader().is_none()) {
        // Without a leader this node may not have heard of the brokers; and nothing commits.
        return Err((ResponseError::NotController, "the controller quorum has no leader now".into()));
    }
    if wanted > brokers.len() {
        // KRaft's message.
        let message = format!(
            "Unable to replicate the partition {wanted} time(s): The target replication factor of {wanted} cannot be reached because only {} broker(s) are registered.",
            brokers.len()
        );
        return Err((ResponseError::InvalidReplicationFactor, message));
    }
    Ok(replicas::assign(&brokers, count, wanted, first, Start::random()))
}

/// The brokers new replicas may go to: the unfenced ones.
fn candidates(image: &MetadataImage) -> Vec<Candidate> {
    image.unfenced_brokers().map(|b| Candidate { node_id: b.node_id, rack: b.rack.clone() }).collect()
}

/// `__consumer_offsets`, placed over `brokers` with `offsets.topic.replication.factor`
/// replicas per partition (fewer when there are fewer brokers, as Kafka); its partition count
/// is fixed from then on, since it decides which partition (and shard) holds each group.
pub fn offsets_topic(config: &crate::config::BrokerConfig, brokers: &[Candidate]) -> TopicMetadata {
    let name = crate::group::OFFSETS_TOPIC;
    let count = config.offsets_topic_num_partitions;
    let wanted = usize::try_from(config.offsets_topic_replication_factor).unwrap_or(1).clamp(1, brokers.len().max(1));
    let replicas = replicas::assign(brokers, count, wanted, 0, Start::random());
    let partitions = (0..count)
        .zip(replicas)
        .map(|(partition, replicas)| {
            PartitionMetadata::new(partition, shard_for_partition(name, partition, config.cores), replicas)
        })
        .collect();
    let configs = std::collections::BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), config.offsets_topic_segment_bytes.to_string()),
    ]);
    TopicMetadata { name: name.to_string(), topic_id: uuid::Uuid::new_v4(), partitions, configs }
}

/// A client's own replica assignment: distinct registered brokers for each partition.
fn check_assignments(image: &MetadataImage, assignments: &[Vec<i32>]) -> Result<(), (ResponseError, String)> {
    for replicas in assignments {
        let distinct: std::collections::HashSet<_> = replicas.iter().collect();
        if replicas.is_empty() || distinct.len() != replicas.len() {
            return Err((ResponseError::InvalidReplicaAssignment, format!("replicas {replicas:?}: empty or repeated")));
        }
        if let Some(unknown) = replicas.iter().find(|id| !image.brokers.contains_key(id)) {
            return Err((ResponseError::InvalidReplicaAssignment, format!("broker {unknown} is not registered")));
        }
    }
    Ok(())
}

/// Grows topics to the partition counts asked; new partitions are placed on shards as the
/// first ones were, persisted, and opened by their owners before the answer.
/// CreatePartitions: as [`create_topics`], made on the active controller, forwarded there by
/// any other broker, which answers once it has the new partitions too.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    topics: Vec<PartitionGrowth>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let Some(lifecycle) = forwarder(shard) else {
        return create_partitions_here(shard, topics, validate_only).await;
    };
    let wanted: Vec<(String, i32)> = topics.iter().map(|t| (t.name.clone(), t.count)).collect();
    let request = CreatePartitionsRequest::default()
        .with_topics(topics.iter().map(partitions_topic).collect())
        .with_timeout_ms(FORWARDED_TIMEOUT_MS)
        .with_validate_only(validate_only);
    let answered = lifecycle.create_partitions(request).await.map(|response| {
        let results = response.results.into_iter();
        results.map(|r| (r.name.0.to_string(), outcome(r.error_code, r.error_message.as_deref()))).collect()
    });
    let results = forwarded_outcomes(wanted.iter().map(|(name, _)| name.clone()).collect(), answered);
    let grown: Vec<&(String, i32)> = wanted
        .iter()
        .filter(|(name, _)| !validate_only && results.iter().any(|(n, r)| n == name && r.is_ok()))
        .collect();
    known_here(shard, |image| {
        grown.iter().all(|(name, count)| image.topic(name).is_some_and(|t| t.partitions.len() as i32 >= *count))
    })
    .await;
    results
}

/// A CreatePartitions another broker forwarded: made as one received here.
pub async fn forwarded_create_partitions(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let growths = request.topics.into_iter().map(|t| PartitionGrowth {
        name: t.name.0.to_string(),
        count: t.count,
        assignments: t
            .assignments
            .map(|list| list.into_iter().map(|a| a.broker_ids.into_iter().map(|id| id.0).collect()).collect()),
    });
    let results = create_partitions_here(shard, growths.collect(), request.validate_only).await;
    let results = results.into_iter().map(|(name, outcome)| {
        let result = CreatePartitionsTopicResult::default().with_name(TopicName(StrBytes::from_string(name)));
        match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                result.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
            }
        }
    });
    CreatePartitionsResponse::default().with_results(results.collect())
}

/// A [`PartitionGrowth`] as a forwarded CreatePartitions carries it.
fn partitions_topic(growth: &PartitionGrowth) -> CreatePartitionsTopic {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
    let assignments = growth.assignments.as_ref().map(|list| {
        let each = |replicas: &Vec<i32>| {
            CreatePartitionsAssignment::default().with_broker_ids(replicas.iter().map(|&id| BrokerId(id)).collect())
        };
        list.iter().map(each).collect()
    });
    CreatePartitionsTopic::default()
        .with_name(TopicName(StrBytes::from_string(growth.name.clone())))
        .with_count(growth.count)
        .with_assignments(assignments)
}

async fn create_partitions_here(
    shard: &Rc<Shard>,
    topics: Vec<PartitionGrowth>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let (_permit, mut image) = begin_change(shard).await;
    let mut results = Vec::with_capacity(topics.len());
    let mut changed = false;
    for growth in topics {
        let result = validate_growth(shard, &image, &growth);
        if let Ok(replicas) = &result
            && !validate_only
        {
            let topic = image.topics.get_mut(&growth.name).expect("validated: the topic exists");
            let first = topic.partitions.len() as i32;
            for (partition, replicas) in (first..growth.count).zip(replicas.clone()) {
                let shard_id = shard_for_partition(&growth.name, partition, shard.shard_count);
                topic.partitions.push(PartitionMetadata::new(partition, shard_id, replicas));
            }
            changed = true;
        }
        results.push((growth.name, result.map(|_| ())));
    }
    if changed {
        publish_for(shard, image, &mut results).await;
    }
    results
}

/// Validates a topic's growth; returns the replicas of each new partition.
fn validate_growth(
    shard: &Shard,
    image: &MetadataImage,
    growth: &PartitionGrowth,
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    let name = &growth.name;
    let Some(topic) = image.topic(name) else {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")));
    };
    if name == crate::group::OFFSETS_TOPIC {
        // Groups are placed by hashing over its partition count, fixed at its creation.
        return Err((ResponseError::InvalidRequest, format!("the partition count of {name} is fixed")));
    }
    let current = topic.partitions.len() as i32;
    if growth.count <= current {
        let message = match growth.count == current {
            true => format!("topic already has {current} partitions"),
            false => format!("topic has {current} partitions, more than the {} asked for", growth.count),
        };
        return Err((ResponseError::InvalidPartitions, message));
    }
    if growth.count > PARTITIONS_MAX {
        return Err((ResponseError::InvalidPartitions, format!("partitions must be between 1 and {PARTITIONS_MAX}")));
    }
    match &growth.assignments {
        Some(assignments) => {
            if assignments.len() != (growth.count - current) as usize {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("{} assignments for {} new partitions", assignments.len(), growth.count - current),
                ));
            }
            check_assignments(image, assignments)?;
            Ok(assignments.clone())
        }
        // As many replicas as the topic's first partition has.
        None => {
            let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len().max(1) as i16);
            place(shard, image, growth.count - current, replication_factor, current)
        }
    }
}

/// Applies config changes to the next image, each validated on its own; the valid ones are
/// published together, and every partition's log runs with them before the answer. Answers
/// are labelled with the resource name, in order.
pub async fn alter_configs(
    shard: &Rc<Shard>,
    changes: Vec<(ConfigResource, Alteration)>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let (_permit, mut image) = begin_change(shard).await;
    let mut results: Vec<TopicResult> = changes
        .into_iter()
        .map(|(resource, alteration)| {
            let outcome = configs::alter(&shard.config, &mut image, &resource, alteration);
            let (ConfigResource::Topic(name) | ConfigResource::Broker(name)) = resource;
            (name, outcome)
        })
        .collect();
    if !validate_only && results.iter().any(|(_, r)| r.is_ok()) {
        publish_for(shard, image, &mut results).await;
    }
    results
}

pub async fn delete_topics(shard: &Rc<Shard>, names: Vec<String>) -> Vec<TopicResult> {
    let (_permit, mut image) = begin_change(shard).await;
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let result = if name == crate::group::OFFSETS_TOPIC {
            Err((ResponseError::InvalidTopicException, format!("{name} is internal")))
        } else {
            match image.topics.remove(&name) {
                Some(_) => Ok(()),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
            }
        };
        results.push((name, result));
    }
    if results.iter().any(|(_, r)| r.is_ok()) {
        publish_for(shard, image, &mut results).await;
    }
    results
}

/// AlterPartitionReassignments: each partition's target (or cancellation) applied to the next
/// image in request order (`cluster::reassignment`), the valid ones published together.
pub async fn alter_reassignments(
    shard: &Rc<Shard>,
    topics: ReassignmentTargets,
    allow_replication_factor_change: bool,
) -> Vec<(String, Vec<(i32, TopicOutcome)>)> {
    let (_permit, mut image) = begin_change(shard).await;
    let mut results: Vec<(String, Vec<(i32, TopicOutcome)>)> = topics
        .into_iter()
        .map(|(topic, partitions)| {
            let outcomes = partitions
                .into_iter()
                .map(|(partition, target)| {
                    let outcome =
                        reassignment::alter(&mut image, &topic, partition, target, allow_replication_factor_change);
                    (partition, outcome)
                })
                .collect();
            (topic, outcomes)
        })
        .collect();
    let mut made: Vec<&mut TopicOutcome> = results
        .iter_mut()
        .flat_map(|(_, partitions)| partitions.iter_mut().map(|(_, o)| o))
        .filter(|o| o.is_ok())
        .collect();
    if !made.is_empty()
        && let Err(error) = propose(shard, records::changes(&shard.metadata(), &image)).await
    {
        for outcome in made.iter_mut() {
            **outcome = Err(error.clone());
        }
    }
    results
}

/// Runs on the controller shard of every controller: while this node is the active controller,
/// completes the reassignments whose target replicas have all joined the ISR.
pub async fn complete_reassignments(shard: Rc<Shard>) {
    loop {
        crate::runtime::sleep(REASSIGNMENT_CHECK_PERIOD).await;
        if !leads(&shard) || !reassignment::any_ready(&shard.metadata()) {
            continue;
        }
        let (_permit, mut image) = begin_change(&shard).await;
        let completed = reassignment::complete_ready(&mut image);
        if completed == 0 {
            continue;
        }
        match propose(&shard, records::changes(&shard.metadata(), &image)).await {
            Ok(()) => tracing::info!(completed, "partition reassignments completed"),
            Err((_, message)) => tracing::info!(%message, "completing partition reassignments failed"),
        }
    }
}

/// Reserves `count` producer ids for one shard to hand out, durably, so that no id is ever
/// given twice, restarts included. Fails with KAFKA_STORAGE_ERROR when the reservation cannot
/// be persisted.
pub async fn allocate_producer_ids(shard: &Rc<Shard>, count: i64) -> Result<i64, ResponseError> {
    assert!(count > 0);
    let (_permit, image) = begin_change(shard).await;
    let first = image.next_producer_id;
    let next = first.checked_add(count).expect("producer ids exhausted");
    propose(shard, vec![MetadataRecord::NextProducerId { from: first, to: next }]).await.map_err(|(error, _)| error)?;
    Ok(first)
}

/// BrokerRegistration on the active controller: records the broker, fenced until its first
/// heartbeat, with a new epoch (the same one again for a retry of the same incarnation); a
/// previous incarnation is fenced first, its leaderships and ISR memberships moved.
pub async fn register_broker(shard: &Rc<Shard>, request: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
    let refused = |error: ResponseError| BrokerRegistrationResponse::default().with_error_code(error.code());
    if !leads(shard) {
        return refused(ResponseError::NotController);
    }
    let (_permit, mut image) = begin_change(shard).await;
    let node_id = request.broker_id.0;
    if request.cluster_id.as_str() != image.cluster_id {
        return refused(ResponseError::InconsistentClusterId);
    }
    let Some(listener) = request.listeners.first() else {
        return refused(ResponseError::InvalidRequest);
    };
    let now = Instant::now();
    let previous = image.brokers.get(&node_id);
    if let Some(previous) = previous.filter(|p| p.incarnation_id == request.incarnation_id) {
        return BrokerRegistrationResponse::default().with_broker_epoch(previous.epoch);
    }
    // Another process with this id, still heartbeating: Kafka refuses the newcomer.
    if previous
        .is_some_and(|p| !p.fenced && shard.broker_sessions.borrow().is_alive(node_id, now, session_timeout(shard)))
    {
        return refused(ResponseError::DuplicateBrokerRegistration);
    }
    let epoch = previous.map_or(1, |p| p.epoch + 1);
    let broker = BrokerRegistration {
        node_id,
        incarnation_id: request.incarnation_id,
        epoch,
        host: listener.host.to_string(),
        port: i32::from(listener.port),
        rack: request.rack.map(|r| r.to_string()),
        fenced: true,
    };
    election::register(&mut image, broker, &unclean_election(shard));
    if let Err((error, message)) = propose(shard, records::changes(&shard.metadata(), &image)).await {
        tracing::info!(node_id, %message, "a broker registration failed");
        return refused(error);
    }
    shard.broker_sessions.borrow_mut().registered(node_id, now, applied_offset(shard));
    tracing::info!(node_id, epoch, "broker registered");
    BrokerRegistrationResponse::default().with_broker_epoch(epoch)
}

/// BrokerHeartbeat on the active controller: the broker lives, at the metadata offset it
/// reports; it is unfenced once that offset has reached its registration, unless it asks to
/// be fenced or to shut down (then it is fenced,
/// and told it may stop once the other brokers have installed that: `Sessions::may_shut_down`).
pub async fn broker_heartbeat(shard: &Rc<Shard>, request: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
    let refused =
        |error: ResponseError| BrokerHeartbeatResponse::default().with_error_code(error.code()).with_is_fenced(true);
    if !leads(shard) {
        return refused(ResponseError::NotController);
    }
    let node_id = request.broker_id.0;
    let (_permit, mut image) = begin_change(shard).await;
    let Some(broker) = image.brokers.get_mut(&node_id) else {
        return refused(ResponseError::BrokerIdNotRegistered);
    };
    if broker.epoch != request.broker_epoch {
        return refused(ResponseError::StaleBrokerEpoch);
    }
    let (fenced, caught_up) = {
        let mut sessions = shard.broker_sessions.borrow_mut();
        sessions.heard(node_id, Instant::now());
        sessions.reported(node_id, request.current_metadata_offset);
        if request.want_shut_down {
            sessions.shut_down(node_id);
        }
        let caught_up = sessions.caught_up(node_id, request.current_metadata_offset, applied_offset(shard));
        // Kafka's rule: a fenced broker is unfenced only once its image has caught up.
        (request.want_fence || sessions.is_shutting_down(node_id) || (broker.fenced && !caught_up), caught_up)
    };
    if broker.fenced != fenced {
        set_fenced(shard, &mut image, node_id, fenced);
        if !fenced && image.topic(crate::group::OFFSETS_TOPIC).is_none() && !image.cluster_id.is_empty() {
            // A quorum of controller-only nodes has no broker to place it on at its bootstrap.
            let brokers = candidates(&image);
            let topic = offsets_topic(&shard.config, &brokers);
            image.topics.insert(topic.name.clone(), topic);
        }
        if let Err((error, message)) = propose(shard, records::changes(&shard.metadata(), &image)).await {
            tracing::info!(node_id, %message, "a broker's heartbeat could not change its state");
            return refused(error);
        }
        tracing::info!(node_id, fenced, "broker {}", if fenced { "fenced at its request" } else { "unfenced" });
    }
    let should_shut_down = request.want_shut_down && fenced && {
        let mut sessions = shard.broker_sessions.borrow_mut();
        // Fenced, it leads nothing, in the log up to what this node has applied by now.
        sessions.moved_away(node_id, applied_offset(shard));
        sessions.may_shut_down(node_id, &image)
    };
    BrokerHeartbeatResponse::default()
        .with_is_caught_up(caught_up)
        .with_is_fenced(fenced)
        .with_should_shut_down(should_shut_down)
}

/// The metadata offset this controller has applied and installed.
fn applied_offset(shard: &Shard) -> i64 {
    let quorum = shard.quorum.get().expect("the controller shard has the quorum");
    i64::try_from(quorum.applied()).unwrap_or(i64::MAX)
}

/// AlterPartition on the active controller: a leader's proposed ISRs (`election::alter_isr`
/// says which hold), written to the metadata log together; each partition is answered with its
/// state after the change, or why it was refused. Versions before 3 name the ISR without
/// broker epochs; `cluster::brokers` hands them over as version 3's, with epoch -1 (any).
pub async fn alter_partition(shard: &Rc<Shard>, request: AlterPartitionRequest) -> AlterPartitionResponse {
    use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
    let refused = |error: ResponseError| AlterPartitionResponse::default().with_error_code(error.code());
    if !leads(shard) {
        return refused(ResponseError::NotController);
    }
    let (_permit, mut image) = begin_change(shard).await;
    let broker_id = request.broker_id.0;
    if image.brokers.get(&broker_id).is_none_or(|b| b.epoch != request.broker_epoch) {
        return refused(ResponseError::StaleBrokerEpoch);
    }
    // The brokers as they are before this change (which changes no broker).
    let brokers = image.brokers.clone();
    let shutting_down: Vec<i32> = {
        let sessions = shard.broker_sessions.borrow();
        brokers.keys().copied().filter(|&id| sessions.is_shutting_down(id)).collect()
    };
    let ineligible = |id: i32, epoch: i64| match brokers.get(&id) {
        None => Some("not registered"),
        Some(_) if shutting_down.contains(&id) => Some("shutting down"),
        Some(b) if b.fenced => Some("fenced"),
        Some(b) if epoch != -1 && epoch != b.epoch => Some("registered again since"),
        Some(_) => None,
    };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = image.topic_by_id(topic.topic_id).map(|t| t.name.clone());
        let mut answers = Vec::with_capacity(topic.partitions.len());
        for data in topic.partitions {
            let answer = PartitionData::default().with_partition_index(data.partition_index);
            let Some(name) = &name else {
                answers.push(answer.with_error_code(ResponseError::UnknownTopicId.code()));
                continue;
            };
            let partitions = &mut image.topics.get_mut(name).expect("found by its id").partitions;
            let Some(p) = usize::try_from(data.partition_index).ok().and_then(|i| partitions.get_mut(i)) else {
                answers.push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let proposal = IsrProposal {
                broker_id,
                leader_epoch: data.leader_epoch,
                partition_epoch: data.partition_epoch,
                new_isr: data.new_isr_with_epochs.iter().map(|b| (b.broker_id.0, b.broker_epoch)).collect(),
                leader_recovery_state: data.leader_recovery_state,
            };
            let answer = match election::alter_isr(p, &proposal, &ineligible) {
                Ok(()) => answer
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_isr(p.isr.iter().copied().map(BrokerId).collect())
                    .with_partition_epoch(p.partition_epoch),
                Err(refusal) => {
                    let (error, reason) = match refusal {
                        IsrRefusal::Behind => (ResponseError::NotController, None),
                        IsrRefusal::FencedLeaderEpoch => (ResponseError::FencedLeaderEpoch, None),
                        IsrRefusal::StalePartitionEpoch => (ResponseError::InvalidUpdateVersion, None),
                        IsrRefusal::Invalid(reason) => (ResponseError::InvalidRequest, Some(reason)),
                        IsrRefusal::Ineligible(reason) => (ResponseError::IneligibleReplica, Some(reason)),
                    };
                    if let Some(reason) = reason {
                        let partition = data.partition_index;
                        tracing::info!(broker_id, topic = %name, partition, %reason, "AlterPartition refused");
                    }
                    answer.with_error_code(error.code())
                }
            };
            answers.push(answer);
        }
        topics.push(TopicData::default().with_topic_id(topic.topic_id).with_partitions(answers));
    }
    let records = records::changes(&shard.metadata(), &image);
    if !records.is_empty()
        && let Err((error, message)) = propose(shard, records).await
    {
        tracing::info!(broker_id, %message, "an AlterPartition could not be written");
        for answer in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()).filter(|a| a.error_code == 0) {
            *answer =
                PartitionData::default().with_partition_index(answer.partition_index).with_error_code(error.code());
        }
    }
    AlterPartitionResponse::default().with_topics(topics)
}

/// ElectLeaders: a preferred or unclean election (`election::elect`) for each partition named,
/// or for every partition when none are (then those that need none go unreported, as in
/// Kafka); the changes are written together. Answered per topic, in request order.
pub async fn elect_leaders(
    shard: &Rc<Shard>,
    election: Election,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<(i32, TopicOutcome)>)> {
    let (_permit, mut image) = begin_change(shard).await;
    let every = topics.is_none();
    let topics = topics.unwrap_or_else(|| {
        image.topics.values().map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect())).collect()
    });
    let eligible = eligible_leaders(shard, &image);
    let mut results = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut outcomes = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let found = image
                .topics
                .get_mut(&name)
                .and_then(|t| usize::try_from(partition).ok().and_then(|i| t.partitions.get_mut(i)));
            let outcome = match found.map(|p| election::elect(p, election, &|r| eligible.contains(&r))) {
                None => Err((ResponseError::UnknownTopicOrPartition, format!("no partition {name}-{partition}"))),
                Some(Elected::Done) => Ok(()),
                Some(Elected::NotNeeded) if every => continue,
                Some(Elected::NotNeeded) => Err((ResponseError::ElectionNotNeeded, "not needed".to_string())),
                Some(Elected::NoneEligible) => Err(match election {
                    Election::Preferred => {
                        (ResponseError::PreferredLeaderNotAvailable, "the preferred leader is not available".into())
                    }
                    _ => (ResponseError::EligibleLeadersNotAvailable, "no live replica may lead".into()),
                }),
            };
            outcomes.push((partition, outcome));
        }
        results.push((name, outcomes));
    }
    let records = records::changes(&shard.metadata(), &image);
    if !records.is_empty()
        && let Err(error) = propose(shard, records).await
    {
        for (_, outcome) in results.iter_mut().flat_map(|(_, outcomes)| outcomes.iter_mut()) {
            if outcome.is_ok() {
                *outcome = Err(error.clone());
            }
        }
    }
    results
}

/// Runs on the controller shard of every node: while this node is the active controller and
/// `auto.leader.rebalance.enable` holds, it moves leadership back to preferred replicas every
/// `leader.imbalance.check.interval.seconds` (`election::imbalanced` says which).
pub async fn balance_leaders(shard: Rc<Shard>) {
    let period = Duration::from_secs(shard.config.leader_imbalance_check_interval_seconds);
    loop {
        crate::runtime::sleep(period).await;
        if !shard.config.auto_leader_rebalance_enable || !leads(&shard) {
            continue;
        }
        let (_permit, mut image) = begin_change(&shard).await;
        let eligible = eligible_leaders(&shard, &image);
        let eligible = |r| eligible.contains(&r);
        let moved = election::imbalanced(&image, shard.config.leader_imbalance_per_broker_percentage, &eligible);
        for (topic, partition) in &moved {
            let p = &mut image.topics.get_mut(topic).expect("found in the image").partitions[*partition as usize];
            election::elect(p, Election::Preferred, &eligible);
        }
        if moved.is_empty() {
            continue;
        }
        match propose(&shard, records::changes(&shard.metadata(), &image)).await {
            Ok(()) => tracing::info!(partitions = ?moved, "leadership moved back to preferred replicas"),
            Err((_, message)) => tracing::info!(%message, "moving leadership back to preferred replicas failed"),
        }
    }
}

/// The brokers that may lead now: unfenced and not shutting down.
fn eligible_leaders(shard: &Shard, image: &MetadataImage) -> std::collections::HashSet<i32> {
    let sessions = shard.broker_sessions.borrow();
    image.unfenced_brokers().map(|b| b.node_id).filter(|&id| !sessions.is_shutting_down(id)).collect()
}

/// Runs on the controller shard of every node: while this node is the active controller, it
/// fences the brokers whose sessions expired.
pub async fn fence_silent_brokers(shard: Rc<Shard>) {
    let timeout = session_timeout(&shard);
    let period = Duration::from_millis(shard.config.broker_heartbeat_interval_ms).min(Duration::from_millis(500));
    loop {
        crate::runtime::sleep(period).await;
        let now = Instant::now();
        shard.broker_sessions.borrow_mut().leading(leads(&shard), now);
        let expired = shard.broker_sessions.borrow().expired(&shard.metadata(), now, timeout);
        if expired.is_empty() {
            continue;
        }
        let (_permit, mut image) = begin_change(&shard).await;
        let sessions = shard.broker_sessions.borrow().expired(&image, Instant::now(), timeout);
        for &node_id in &sessions {
            set_fenced(&shard, &mut image, node_id, true);
        }
        if sessions.is_empty() {
            continue;
        }
        match propose(&shard, records::changes(&shard.metadata(), &image)).await {
            Ok(()) => tracing::info!(brokers = ?sessions, "fenced brokers whose sessions expired"),
            Err((_, message)) => tracing::info!(brokers = ?sessions, %message, "fencing brokers failed"),
        }
    }
}

/// Fences or unfences a broker in `image`, electing leaders by each topic's
/// `unclean.leader.election.enable`.
fn set_fenced(shard: &Shard, image: &mut MetadataImage, node_id: i32, fenced: bool) {
    election::set_fenced(image, node_id, fenced, &unclean_election(shard));
}

/// Whether a topic with these configs allows unclean leader election, by the broker's configs
/// in force.
fn unclean_election(shard: &Shard) -> impl Fn(&election::TopicConfigs) -> bool {
    let config = shard.effective_config();
    move |configs| config.unclean_leader_election(configs)
}

fn leads(shard: &Shard) -> bool {
    shard.quorum.get().is_some_and(|quorum| quorum.is_leader())
}

fn session_timeout(shard: &Shard) -> Duration {
    Duration::from_millis(shard.config.broker_session_timeout_ms)
}

/// Waits for any other change to finish; returns the permit that keeps the next one waiting
/// and a copy of the current image to change.
async fn begin_change(shard: &Shard) -> (Permit<'_>, MetadataImage) {
    assert_eq!(shard.id, CONTROLLER_SHARD);
    let permit = shard.controller_lock.acquire_permit(1).await.expect("the controller lock is never closed");
    (permit, (*shard.metadata()).clone())
}

/// Proposes `records` to the metadata log and waits until they are installed everywhere. A
/// log that cannot be written (a full disk) refuses the change with KAFKA_STORAGE_ERROR and the
/// image in force stays as it was: no client hears of a change that would vanish on restart.
async fn propose(shard: &Shard, records: Vec<MetadataRecord>) -> Result<(), (ResponseError, String)> {
    let quorum = shard.quorum.get().expect("the controller shard has the quorum");
    quorum.propose(records).await.map_err(|e| match e {
        ProposeError::NotLeader => (ResponseError::NotController, "the controller quorum has no leader now".into()),
        // Retriable: the retry sees the image that won (and, say, TOPIC_ALREADY_EXISTS).
        ProposeError::Conflict(reason) => (ResponseError::NotController, format!("a concurrent change won: {reason}")),
        ProposeError::TimedOut => {
            (ResponseError::RequestTimedOut, "the change was not committed in time; it may still be".into())
        }
        ProposeError::Storage(message) => {
            tracing::error!(%message, "the metadata change is refused");
            (ResponseError::KafkaStorageError, message)
        }
    })
}

/// Publishes the image that the successful `results` built; if that fails, nothing changed,
/// and each of them gets the error instead.
async fn publish_for(shard: &Rc<Shard>, image: MetadataImage, results: &mut [TopicResult]) {
    let records = records::changes(&shard.metadata(), &image);
    if let Err(error) = propose(shard, records).await {
        for (_, result) in results.iter_mut().filter(|(_, r)| r.is_ok()) {
            *result = Err(error.clone());
        }
    }
}

/// Installs a committed image (from the metadata log) on every shard, with this run's offline
/// marks; partitions that then fail to open are marked too, in a further install.
pub async fn install_committed(shard: &Rc<Shard>, mut image: MetadataImage) {
    let _permit = shard.install_lock.acquire_permit(1).await.expect("the install lock is never closed");
    image.place_orphans(shard.shard_count);
    set_offline(&mut image, &shard.offline_marks.borrow());
    let offline = install(shard, &image).await;
    if !offline.is_empty() {
        shard.offline_marks.borrow_mut().extend(offline.iter().cloned());
        set_offline(&mut image, &offline);
        install(shard, &image).await;
    }
}

/// This node's image has caught up with the quorum's committed metadata since its start (its
/// broker's heartbeat says so): every shard takes up the leaderships the image gives it, with
/// the image in force reinstalled.
pub async fn caught_up(shard: &Rc<Shard>) {
    shard.caught_up.set(true);
    install_committed(shard, (*shard.metadata()).clone()).await;
}

/// Owners report partitions that failed to open (at startup): the image marks them offline,
/// so that Metadata on every shard answers for them as Kafka does for an offline replica.
/// Offline is a state of this run, not of the cluster: it is not in the log.
pub async fn mark_offline(shard: &Rc<Shard>, partitions: Vec<TopicPartition>) {
    let _permit = shard.install_lock.acquire_permit(1).await.expect("the install lock is never closed");
    shard.offline_marks.borrow_mut().extend(partitions);
    let mut image = (*shard.metadata()).clone();
    set_offline(&mut image, &shard.offline_marks.borrow());
    let again = install(shard, &image).await;
    debug_assert!(again.is_empty(), "an offline partition is never opened again");
}

fn set_offline(image: &mut MetadataImage, partitions: &[TopicPartition]) {
    for tp in partitions {
        if let Some(p) = image.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(tp.partition as usize)) {
            p.offline = true;
        }
    }
}

/// Installs `image` on every shard; returns the partitions that failed to open.
async fn install(shard: &Rc<Shard>, image: &MetadataImage) -> Vec<TopicPartition> {
    let caught_up = shard.caught_up.get();
    shard.on_every_shard(|| ApplyMetadata { image: image.clone(), caught_up }).await.into_iter().flatten().collect()
}
