"""confluent-kafka (librdkafka): many records per codec, read back in order; admin calls.

Prints one JSON summary line; exits non-zero (via assert) on any mismatch.
"""
import argparse
import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 120
PARTITIONS = 6


def produce(bootstrap, topic, codec, count):
    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 10, "acks": "all"}
    )
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(str(err))

    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=b"%d" % (i % 1000), value=b"%s-%d" % (codec.encode(), i), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(TIMEOUT_S)
    assert left == 0, f"{left} records not delivered"
    assert not errors, errors[:5]


def consume(bootstrap, topic, count):
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    offsets = {p: [] for p in range(PARTITIONS)}
    values = {p: [] for p in range(PARTITIONS)}
    got = 0
    deadline = time.time() + TIMEOUT_S
    while got < count and time.time() < deadline:
        for m in consumer.consume(10000, 0.5):
            assert m.error() is None, m.error()
            offsets[m.partition()].append(m.offset())
            values[m.partition()].append(int(m.value().split(b"-")[1]))
            got += 1
    consumer.close()
    assert got == count, f"{topic}: consumed {got} of {count}"
    for p in range(PARTITIONS):
        assert offsets[p] == list(range(len(offsets[p]))), f"{topic}-{p}: offsets not contiguous"
        assert values[p] == sorted(values[p]), f"{topic}-{p}: order not preserved"
    return {p: len(offsets[p]) for p in range(PARTITIONS)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    codecs = ["lz4", "snappy", "zstd"]
    topics = [f"codec-{c}" for c in codecs]
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
        future.result(TIMEOUT_S)
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    assert all(t in listed for t in topics), sorted(listed)
    assert all(len(listed[t].partitions) == PARTITIONS for t in topics)

    summary = {}
    for codec, topic in zip(codecs, topics):
        produce(args.bootstrap, topic, codec, args.records)
        summary[codec] = consume(args.bootstrap, topic, args.records)

    for future in admin.delete_topics(topics).values():
        future.result(TIMEOUT_S)
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    assert not any(t in listed for t in topics), sorted(listed)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
