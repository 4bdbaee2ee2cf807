"""Log lifecycle and admin APIs through the clients' admin interfaces: confluent-kafka
(librdkafka) and kafka-python.

Usage: admin_lifecycle.py --bootstrap ADDR SCENARIO [--topic T]
Prints one JSON summary line; exits non-zero (via assert) on any mismatch. Waits are polls of
a condition with a deadline.
"""
import argparse
import json
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, ResourceType)
from confluent_kafka.error import KafkaException
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewPartitions as KNewPartitions
from kafka.errors import InvalidPartitionsError, OffsetOutOfRangeError

TIMEOUT_S = 60


def confluent_admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create(admin, topic, partitions=1, config=None):
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=30)
    futures[topic].result(TIMEOUT_S)


def produce(bootstrap, topic, count, partition=0, value=b"x" * 100):
    # Small batches, so that segments of a few hundred bytes hold several of them.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "batch.num.messages": 5})
    errors = []
    for i in range(count):
        producer.produce(topic, value=value + b"-%d" % i, partition=partition,
                         on_delivery=lambda err, _m: err and errors.append(str(err)))
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0
    assert not errors, errors[:5]


def earliest(bootstrap, topic, partition=0):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    consumer.close()
    return low, high


def wait_for_start_above(bootstrap, topic, offset, keep_producing=False):
    """Polls the log start offset until it passes `offset`; producing one record per poll
    rolls the active segment once `segment.ms` has passed."""
    deadline = time.time() + TIMEOUT_S
    while True:
        low, high = earliest(bootstrap, topic)
        if low > offset:
            return low, high
        assert time.time() < deadline, f"log start offset stayed at {low}"
        if keep_producing:
            produce(bootstrap, topic, 1)
        time.sleep(0.1)


def read_from_zero_is_out_of_range(bootstrap, topic):
    """A confluent consumer that must not reset its offset sees OFFSET_OUT_OF_RANGE at 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "auto.offset.reset": "error",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.time() + TIMEOUT_S
    try:
        while time.time() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"read offset {m.offset()} below the log start"
            assert m.error().code() == KafkaError._AUTO_OFFSET_RESET, m.error()
            return True
    finally:
        consumer.close()
    raise AssertionError("no out-of-range error")


def retention_time(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    create(admin, topic, config={"retention.ms": "1000", "segment.ms": "100"})
    produce(bootstrap, topic, 20)
    low, high = wait_for_start_above(bootstrap, topic, 19, keep_producing=True)
    return {"low": low, "high": high, "out_of_range": read_from_zero_is_out_of_range(bootstrap, topic)}


def retention_size(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    create(admin, topic, config={"retention.bytes": "3000", "segment.bytes": "1000"})
    produce(bootstrap, topic, 200)
    low, high = wait_for_start_above(bootstrap, topic, 0)
    return {"low": low, "high": high, "out_of_range": read_from_zero_is_out_of_range(bootstrap, topic)}


def delete_records(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    create(admin, topic, partitions=2)
    produce(bootstrap, topic, 50, partition=0)
    produce(bootstrap, topic, 50, partition=1)
    # confluent-kafka's DeleteRecords on partition 0.
    result = admin.delete_records([TopicPartition(topic, 0, 30)])
    deleted = list(result.values())[0].result(TIMEOUT_S)
    assert deleted.low_watermark == 30, deleted
    # kafka-python's on partition 1, up to the high watermark (-1); beyond it is refused.
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    answer = kadmin.delete_records({KTopicPartition(topic, 1): -1})
    assert answer[KTopicPartition(topic, 1)]["low_watermark"] == 50, answer
    try:
        kadmin.delete_records({KTopicPartition(topic, 0): 51})
        raise AssertionError("deleting past the high watermark succeeded")
    except OffsetOutOfRangeError:
        pass
    kadmin.close()
    assert earliest(bootstrap, topic, 0) == (30, 50)
    assert earliest(bootstrap, topic, 1) == (50, 50)
    # A kafka-python consumer that may not reset hits the new start.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="none", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    tp = KTopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 10)
    try:
        consumer.poll(timeout_ms=5000)
        raise AssertionError("fetch below the log start succeeded")
    except OffsetOutOfRangeError:
        pass
    consumer.seek(tp, 30)
    offsets = []
    deadline = time.time() + TIMEOUT_S
    while len(offsets) < 20 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            offsets.extend(r.offset for r in records)
    consumer.close()
    assert offsets == list(range(30, 50)), offsets
    return {"low": [30, 50]}


def partition_count(admin, topic):
    return len(admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)


def consume_all(bootstrap, topic, partitions):
    """Every record of the given partitions, from the start: {partition: [values]}."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ends = {p: earliest(bootstrap, topic, p)[1] for p in partitions}
    got = {p: [] for p in partitions}
    deadline = time.time() + TIMEOUT_S
    while any(len(got[p]) < ends[p] for p in partitions):
        assert time.time() < deadline, f"consumed {got}, expected up to {ends}"
        for m in consumer.consume(1000, 0.5):
            assert m.error() is None, m.error()
            got[m.partition()].append(m.value().decode())
    consumer.close()
    return got


def create_partitions(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    create(admin, topic, partitions=2)
    # validate_only changes nothing.
    futures = admin.create_partitions([NewPartitions(topic, 4)], validate_only=True)
    futures[topic].result(TIMEOUT_S)
    assert partition_count(admin, topic) == 2
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(TIMEOUT_S)
    assert partition_count(admin, topic) == 4
    # kafka-python grows it again; shrinking is refused.
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kadmin.create_partitions({topic: KNewPartitions(total_count=6)})
    try:
        kadmin.create_partitions({topic: KNewPartitions(total_count=3)})
        raise AssertionError("shrinking a topic succeeded")
    except InvalidPartitionsError:
        pass
    kadmin.close()
    assert partition_count(admin, topic) == 6
    for p in range(6):
        produce(bootstrap, topic, 3, partition=p, value=b"p%d" % p)
    got = consume_all(bootstrap, topic, range(6))
    assert all(got[p] == [f"p{p}-{i}" for i in range(3)] for p in range(6)), got
    return {"partitions": 6}


def partitions_after_restart(bootstrap, topic):
    """After a restart: the grown topic keeps its partitions and their records, and takes more."""
    admin = confluent_admin(bootstrap)
    assert partition_count(admin, topic) == 6
    produce(bootstrap, topic, 1, partition=5, value=b"after")
    got = consume_all(bootstrap, topic, range(6))
    assert got[5] == ["p5-0", "p5-1", "p5-2", "after-0"], got
    return {"partitions": 6}


def describe_topic(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return list(admin.describe_configs([resource]).values())[0].result(TIMEOUT_S)


def alter_topic(admin, topic, **ops):
    """IncrementalAlterConfigs through confluent-kafka: key=value sets, key=None deletes."""
    entries = [
        ConfigEntry(k.replace("_", "."), v,
                    incremental_operation=AlterConfigOpType.DELETE if v is None else AlterConfigOpType.SET)
        for k, v in ops.items()
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    list(admin.incremental_alter_configs([resource]).values())[0].result(TIMEOUT_S)


def refused(call, code):
    try:
        call()
    except KafkaException as e:
        assert e.args[0].code() == code, e
        return True
    raise AssertionError("accepted")


def configs(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    # Unknown or unsupported configs are refused, at creation and later.
    assert refused(lambda: create(admin, "bad", config={"segment.jitter.ms": "5"}), KafkaError.INVALID_CONFIG)
    assert refused(lambda: create(admin, "bad", config={"compression.type": "gzip"}), KafkaError.INVALID_CONFIG)
    create(admin, topic, config={"retention.bytes": "100000"})
    assert refused(lambda: alter_topic(admin, topic, preallocate="true"), KafkaError.INVALID_CONFIG)
    assert refused(lambda: alter_topic(admin, topic, retention_ms="soon"), KafkaError.INVALID_CONFIG)

    described = describe_topic(admin, topic)
    assert described["retention.bytes"].value == "100000"
    assert described["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].value == "604800000"
    assert described["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert described["cleanup.policy"].value == "delete"

    # max.message.bytes takes effect at once.
    produce(bootstrap, topic, 3)
    alter_topic(admin, topic, max_message_bytes="200")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "retries": 0})
    errors = []
    producer.produce(topic, value=b"y" * 1000, partition=0, on_delivery=lambda err, _m: errors.append(err))
    producer.flush(TIMEOUT_S)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors
    alter_topic(admin, topic, max_message_bytes=None)

    # Retention made short takes effect on data already there.
    alter_topic(admin, topic, retention_ms="200", segment_ms="50")
    low, _ = wait_for_start_above(bootstrap, topic, 2, keep_producing=True)

    # min.insync.replicas=2 cannot be met by one replica: acks=all produces are refused.
    alter_topic(admin, topic, retention_ms=None, segment_ms=None, min_insync_replicas="2")
    errors = []
    producer.produce(topic, value=b"z", partition=0, on_delivery=lambda err, _m: errors.append(err))
    producer.flush(TIMEOUT_S)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors

    alter_topic(admin, topic, min_insync_replicas=None)

    # Records stamped an hour ahead of the broker's clock are refused once the topic allows 1 s.
    alter_topic(admin, topic, message_timestamp_after_max_ms="1000")
    errors = []
    producer.produce(topic, value=b"future", partition=0, timestamp=int(time.time() * 1000) + 3_600_000,
                     on_delivery=lambda err, _m: errors.append(err))
    producer.flush(TIMEOUT_S)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_TIMESTAMP, errors
    alter_topic(admin, topic, message_timestamp_after_max_ms=None)
    # kafka-python's AlterConfigs (it resends the other modified keys, since AlterConfigs
    # replaces the whole set); its describe lists what differs from the defaults.
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kadmin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"segment.bytes": "50000", "cleanup.policy": "compact,delete"})],
                         incremental=False)
    modified = kadmin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic)])
    kadmin.close()
    modified = modified["topic"][topic]
    assert set(modified) >= {"segment.bytes", "cleanup.policy"} and "segment.ms" not in modified, modified
    described = describe_topic(admin, topic)
    assert described["segment.bytes"].value == "50000"
    assert described["cleanup.policy"].value == "compact,delete"
    assert described["min.insync.replicas"].value == "1"

    # Broker defaults change live too, for topics that do not set their own.
    alter_topic(admin, topic, retention_bytes=None)
    assert describe_topic(admin, topic)["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    broker = ConfigResource(ResourceType.BROKER, "0",
                            incremental_configs=[ConfigEntry("log.retention.bytes", "123456",
                                                             incremental_operation=AlterConfigOpType.SET)])
    list(admin.incremental_alter_configs([broker]).values())[0].result(TIMEOUT_S)
    described = describe_topic(admin, topic)
    assert described["retention.bytes"].value == "123456"
    assert described["retention.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    read_only = ConfigResource(ResourceType.BROKER, "0",
                               incremental_configs=[ConfigEntry("log.dirs", "/tmp",
                                                                incremental_operation=AlterConfigOpType.SET)])
    assert refused(lambda: list(admin.incremental_alter_configs([read_only]).values())[0].result(TIMEOUT_S),
                   KafkaError.INVALID_CONFIG)
    return {"low": low, "modified": sorted(modified)}


def configs_after_restart(bootstrap, topic):
    admin = confluent_admin(bootstrap)
    described = describe_topic(admin, topic)
    assert described["segment.bytes"].value == "50000"
    assert described["cleanup.policy"].value == "compact,delete"
    assert described["retention.bytes"].value == "123456"
    broker = list(admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")]).values())[0].result(TIMEOUT_S)
    assert broker["log.retention.bytes"].value == "123456"
    assert broker["log.retention.check.interval.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert broker["log.dirs"].is_read_only
    return {"ok": True}


def describe(bootstrap, topic):
    """DescribeCluster, DescribeLogDirs and DescribeProducers after an idempotent producer wrote."""
    admin = confluent_admin(bootstrap)
    create(admin, topic, partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
    for i in range(10):
        producer.produce(topic, value=b"v%d" % i, partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    cluster = admin.describe_cluster().result(TIMEOUT_S)
    assert [n.id for n in cluster.nodes] == [0] and cluster.controller.id == 0, cluster
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kcluster = kadmin.describe_cluster()
    log_dirs = kadmin.describe_log_dirs()
    producers = kadmin.describe_producers([KTopicPartition(topic, 0), KTopicPartition(topic, 1)])
    kadmin.close()
    p0 = producers[KTopicPartition(topic, 0)].active_producers
    assert len(p0) == 1 and p0[0].last_sequence == 9, p0
    assert producers[KTopicPartition(topic, 1)].active_producers == []
    return {"cluster_id": cluster.cluster_id, "kafka_python_cluster": str(kcluster), "log_dirs": log_dirs}


SCENARIOS = {
    "describe": describe,
    "configs": configs,
    "configs-after-restart": configs_after_restart,
    "create-partitions": create_partitions,
    "partitions-after-restart": partitions_after_restart,
    "retention-time": retention_time,
    "retention-size": retention_size,
    "delete-records": delete_records,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--topic", default="lifecycle")
    args = parser.parse_args()
    print(json.dumps(SCENARIOS[args.scenario](args.bootstrap, args.topic)))


if __name__ == "__main__":
    main()
