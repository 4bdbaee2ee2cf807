"""Consumer groups with confluent-kafka (librdkafka): the cooperative-sticky assignor,
auto-commit, and a member that dies while the group rebalances. Prints one JSON summary line;
exits non-zero (via assert) on any failure.
"""
import argparse
import json
import multiprocessing
import os
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE_S = 60
PARTITIONS = 4
RECORDS = 2000


def produce(bootstrap, topic):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=b"%d" % i, value=b"%d" % i)
    assert producer.flush(30) == 0


def consumer(bootstrap, group, extra):
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    config.update(extra)
    return Consumer(config)


def consume_until(consumers, done, seen=None):
    """Polls `consumers` into `seen` (a set of (partition, offset)) until `done(seen)`."""
    seen = set() if seen is None else seen
    deadline = time.time() + DEADLINE_S
    while not done(seen):
        assert time.time() < deadline, f"not done after {DEADLINE_S} s; consumed {len(seen)} of {RECORDS}"
        for c in consumers:
            for m in c.consume(500, 0.1):
                assert m.error() is None, m.error()
                seen.add((m.partition(), m.offset()))
    return seen


def cooperative(bootstrap):
    topic = "cooperative"
    produce(bootstrap, topic)
    extra = {"partition.assignment.strategy": "cooperative-sticky", "enable.auto.commit": True}
    first = consumer(bootstrap, "coop", extra)
    first.subscribe([topic])
    # Let the first member own everything, then add a second: partitions move incrementally.
    seen = consume_until([first], lambda seen: len(first.assignment()) == PARTITIONS and len(seen) > 0)
    second = consumer(bootstrap, "coop", extra)
    second.subscribe([topic])
    seen = consume_until(
        [first, second],
        lambda seen: len(seen) >= RECORDS and len(first.assignment()) + len(second.assignment()) == PARTITIONS
        and len(second.assignment()) > 0,
        seen,
    )
    owned = sorted(tp.partition for c in (first, second) for tp in c.assignment())
    assert owned == list(range(PARTITIONS)), owned
    split = [len(first.assignment()), len(second.assignment())]
    first.close()
    second.close()
    return {"records": len(seen), "split": split}


def auto_commit(bootstrap):
    topic = "autocommit"
    produce(bootstrap, topic)
    c = consumer(bootstrap, "auto", {"enable.auto.commit": True, "auto.commit.interval.ms": 100})
    c.subscribe([topic])
    seen = consume_until([c], lambda seen: len(seen) >= RECORDS)
    ends = {}
    for p in range(PARTITIONS):
        ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    c.close()  # commits the final positions
    checker = consumer(bootstrap, "auto", {"enable.auto.commit": False})
    committed = checker.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    checker.close()
    for tp in committed:
        assert tp.error is None, tp.error
        assert tp.offset == ends[tp.partition], f"partition {tp.partition}: committed {tp.offset}, end {ends[tp.partition]}"
    return {"records": len(seen), "committed": {tp.partition: tp.offset for tp in committed}}


def member_process(bootstrap, topic, group, assigned):
    """A member in its own process, to be killed with SIGKILL: it never leaves the group."""
    c = consumer(bootstrap, group, {})
    c.subscribe([topic])
    parent = os.getppid()
    while os.getppid() == parent:
        c.poll(0.1)
        if c.assignment():
            assigned.set()


def dead_member(bootstrap):
    """A member is killed, then a new one joins before the dead one's session has lapsed. The
    join must complete once that session lapses (6 s), not at the rebalance timeout
    (librdkafka's max.poll.interval.ms, 300 s)."""
    topic = "dead-member"
    # A fresh interpreter, not a fork of this one and its client threads.
    assigned = multiprocessing.get_context("spawn").Event()
    victim = multiprocessing.get_context("spawn").Process(
        target=member_process, args=(bootstrap, topic, "dead", assigned), daemon=True
    )
    victim.start()
    assert assigned.wait(DEADLINE_S), "the first member never got partitions"
    survivor = consumer(bootstrap, "dead", {})
    survivor.subscribe([topic])
    consume_until([survivor], lambda _: len(survivor.assignment()) == PARTITIONS // 2)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    newcomer = consumer(bootstrap, "dead", {})
    newcomer.subscribe([topic])
    consume_until(
        [survivor, newcomer],
        lambda _: len(survivor.assignment()) + len(newcomer.assignment()) == PARTITIONS
        and len(newcomer.assignment()) > 0,
    )
    rebalanced_after = time.time() - killed_at
    survivor.close()
    newcomer.close()
    return {"rebalanced_after_s": round(rebalanced_after, 2)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("scenario", nargs="?", choices=["assignors", "dead_member"], default="assignors")
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topics = ("cooperative", "autocommit") if args.scenario == "assignors" else ("dead-member",)
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
        f.result(30)
    if args.scenario == "assignors":
        print(json.dumps({"cooperative": cooperative(args.bootstrap), "auto_commit": auto_commit(args.bootstrap)}))
    else:
        print(json.dumps({"dead_member": dead_member(args.bootstrap)}))


if __name__ == "__main__":
    main()
