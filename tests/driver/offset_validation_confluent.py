"""confluent-kafka (librdkafka): KIP-320 offset validation. A position assigned with a leader
epoch is checked with OffsetForLeaderEpoch before it is fetched from: within that epoch's part of
the log it is kept; a position sought past where the epoch ended is reported, with
auto.offset.reset=error, as log truncation naming the broker's end offset for that epoch.
(Positions given to assign() are not validated by librdkafka 2.16; seek() positions are.)

Prints one JSON summary line; exits non-zero (via assert) on any mismatch.
"""
import argparse
import json
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60
TOPIC = "validated"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(TIMEOUT_S)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(TOPIC, value=b"%d" % i)
    assert producer.flush(TIMEOUT_S) == 0

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "validation",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
    })
    deadline = time.time() + TIMEOUT_S
    consumer.assign([TopicPartition(TOPIC, 0, 5, leader_epoch=0)])
    offsets, epochs = [], set()
    while len(offsets) < 5:
        assert time.time() < deadline, f"records from offset 5 did not come: {offsets}"
        for m in consumer.consume(10, 0.2):
            assert m.error() is None, m.error()
            offsets.append(m.offset())
            epochs.add(m.leader_epoch())

    consumer.seek(TopicPartition(TOPIC, 0, 20, leader_epoch=0))
    truncation = None
    seen = []
    while truncation is None:
        assert time.time() < deadline, f"no log truncation reported: {seen}"
        for m in consumer.consume(10, 0.2):
            assert m.error() is not None, f"a record past the log end: {m.offset()}"
            seen.append((m.error().code(), m.error().str()))
            # librdkafka reports the truncation it detected as a failed offset reset.
            if m.error().code() == KafkaError._AUTO_OFFSET_RESET and "truncation detected" in m.error().str():
                truncation = m.error().str()
    consumer.close()
    print(json.dumps({"validated_offsets": offsets, "record_epochs": sorted(epochs), "truncation": truncation}))


if __name__ == "__main__":
    main()
