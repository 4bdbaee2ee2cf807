"""The seed tutorials' kafka-python scenarios against a live broker.

Prints one JSON summary line; exits non-zero (via assert) on any mismatch.
"""
import argparse
import json
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

TIMEOUT_S = 30


def consume_all(bootstrap, topic, partitions, expected, **kwargs):
    """Reads `expected` records from the start of every partition, bounded in time."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        **kwargs,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    records = []
    deadline = time.time() + TIMEOUT_S
    while len(records) < expected and time.time() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    assert len(records) == expected, f"{topic}: consumed {len(records)} of {expected}"
    return records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    args = parser.parse_args()
    bootstrap = args.bootstrap
    summary = {}

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(name, 3, 1) for name in ("plain", "keyed", "json", "gzip")])
    assert {"plain", "keyed", "json", "gzip"} <= set(admin.list_topics())

    # 100 messages, no key, no partition: they spread over the partitions.
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    sent = {}
    for i in range(100):
        metadata = producer.send("plain", value=b"message-%d" % i).get(timeout=TIMEOUT_S)
        sent[(metadata.partition, metadata.offset)] = b"message-%d" % i
    spread = sorted({p for p, _ in sent})
    assert len(spread) > 1, f"100 unkeyed messages all went to partitions {spread}"
    records = consume_all(bootstrap, "plain", 3, 100)
    for r in records:
        assert r.topic == "plain"
        assert sent[(r.partition, r.offset)] == r.value, (r.partition, r.offset, r.value)
        assert r.key is None
    per_partition = {}
    for r in records:
        per_partition.setdefault(r.partition, []).append(r.offset)
    for p, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {p} offsets {offsets}"
    summary["plain_partitions"] = spread

    # Keyed messages: every key always lands in one partition.
    futures = [producer.send("keyed", key=b"user-%d" % (i % 10), value=b"%d" % i) for i in range(200)]
    producer.flush()
    key_partitions = {}
    for f in futures:
        f.get(timeout=TIMEOUT_S)
    for r in consume_all(bootstrap, "keyed", 3, 200):
        key_partitions.setdefault(r.key, set()).add(r.partition)
    assert len(key_partitions) == 10
    assert all(len(ps) == 1 for ps in key_partitions.values()), key_partitions
    summary["keys"] = len(key_partitions)

    # A JSON value serializer round-trips.
    json_producer = KafkaProducer(
        bootstrap_servers=bootstrap, value_serializer=lambda v: json.dumps(v).encode("utf-8")
    )
    documents = [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(50)]
    for d in documents:
        json_producer.send("json", value=d)
    json_producer.flush()
    got = consume_all(bootstrap, "json", 3, 50, value_deserializer=lambda b: json.loads(b.decode("utf-8")))
    assert sorted((r.value for r in got), key=lambda d: d["id"]) == documents
    summary["json"] = len(got)

    # gzip compression round-trips.
    gzip_producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=20)
    payloads = [(b"k%d" % i, (b"compressible payload %d " % i) * 20) for i in range(300)]
    for key, value in payloads:
        gzip_producer.send("gzip", key=key, value=value)
    gzip_producer.flush()
    got = consume_all(bootstrap, "gzip", 3, 300)
    assert sorted((r.key, r.value) for r in got) == sorted(payloads)
    summary["gzip"] = len(got)

    for p in (producer, json_producer, gzip_producer):
        p.close()
    admin.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
