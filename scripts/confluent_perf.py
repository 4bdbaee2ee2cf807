"""What a real librdkafka client gets: produce, then consume, a topic with confluent-kafka.

Usage: confluent_perf.py BOOTSTRAP TOPIC PARTITIONS RECORDS RECORD_SIZE
Prints one JSON line: records/s and MB/s (record value bytes) each way.
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    bootstrap, topic, partitions, records, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": 1,
        "batch.size": 1 << 20,
        "linger.ms": 5,
        "queue.buffering.max.kbytes": 1 << 20,
        "queue.buffering.max.messages": 1_000_000,
    })
    value = b"x" * size
    start = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.001)
    assert producer.flush(60) == 0, "records left unsent"
    produce_s = time.perf_counter() - start

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"perf-{topic}",
        "enable.auto.commit": False,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 1 << 20,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    consumed = 0
    start = time.perf_counter()
    while consumed < records:
        batch = consumer.consume(10_000, timeout=10)
        assert batch, f"no records after {consumed}"
        for message in batch:
            assert message.error() is None, message.error()
        consumed += len(batch)
    consume_s = time.perf_counter() - start
    consumer.close()

    mb = records * size / 1e6
    print(json.dumps({
        "partitions": partitions,
        "produce_records_per_s": records / produce_s,
        "produce_mb_per_s": mb / produce_s,
        "consume_records_per_s": records / consume_s,
        "consume_mb_per_s": mb / consume_s,
    }))


if __name__ == "__main__":
    main()
