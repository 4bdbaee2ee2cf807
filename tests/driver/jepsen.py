"""A Jepsen-style workload and checker with confluent-kafka (librdkafka).

Subcommands (each prints one JSON summary line last):

  produce   an idempotent acks=all producer writing unique values `PREFIX:N` (N = 0, 1, ... in
            production order) at a steady rate until its stdin closes, then flushing. Writes its
            history to --history: every value with its outcome, "acked" (with the partition and
            offset the broker gave it), "failed" (with the error) or "unknown" (no answer).
            Prints `acked COUNT` lines (and `partition P acked COUNT`) as it goes, for a test
            to follow its progress.
  consume   reads every partition of the topic from the start up to its high watermark and
            writes every record read, as [partition, offset, value], to --reads. With --follow
            it keeps reading (re-reading from the start when an offset is out of range) until
            its stdin closes, then reads up to the high watermarks of that moment. With --group
            it is a member of that consumer group (subscribed, committing after every poll that
            read something, printing `consumed COUNT` lines) and counts the records it read
            again below an offset the group had committed: a group resumes from its commits.
  check     judges producer histories against reads (--final: the read that must hold
            everything; the others only add observations): acknowledged values lost,
            duplicates (one value at two positions), reordering (a producer's values out of
            order within a partition), conflicts (one position that returned two values, the
            positions acks reported included), unexpected values (never produced), values
            whose produce failed yet are visible, (--group-reads) acknowledged values a
            consumer group never read, and (--fault-at PARTITION@TIME, a wall-clock time) the
            seconds from each fault of a partition to the first acknowledgement there of a
            value produced after it (answers the old leader sent before it died may still be
            handled after the fault: not counted).
  self-test runs the checker on deliberately broken histories; fails unless it finds each fault.
"""
import argparse
import json
import sys
import threading
import time
import uuid

FLUSH_TIMEOUT_S = 90
READ_TIMEOUT_S = 60


def client_config(bootstrap):
    return {
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "retry.backoff.ms": 20,
    }


def stdin_closed():
    """An event set once stdin closes: the test's cue to stop."""
    stop = threading.Event()

    def wait():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop


def produce(args):
    from confluent_kafka import Producer

    stop = stdin_closed()
    fatal = []
    outcomes = {}
    acked = [0]
    acked_on = {}

    def delivered(err, msg, sent):
        value = msg.value().decode()
        if err is None:
            acked[0] += 1
            acked_on[msg.partition()] = acked_on.get(msg.partition(), 0) + 1
            outcomes[value] = {
                "status": "acked",
                "partition": msg.partition(),
                "offset": msg.offset(),
                "produced_at": sent,
                "acked_at": time.time(),
            }
        else:
            outcomes[value] = {"status": "failed", "error": str(err)}

    def on_error(err):
        # Broker-down errors are expected here; a fatal one ends idempotence.
        if err.fatal():
            fatal.append(str(err))
        print(f"client error: {err}", file=sys.stderr)

    config = client_config(args.bootstrap)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": FLUSH_TIMEOUT_S * 1000,
            "error_cb": on_error,
        }
    )
    for setting in args.config:
        key, _, value = setting.partition("=")
        config[key] = value
    producer = Producer(config)
    produced = []
    start = time.monotonic()
    reported = start
    while not stop.is_set():
        if time.monotonic() - reported >= 0.1:
            reported = time.monotonic()
            for partition, count in sorted(acked_on.items()):
                print(f"partition {partition} acked {count}")
            print(f"acked {acked[0]}", flush=True)
        due = int((time.monotonic() - start) * args.rate)
        while len(produced) < due:
            value = f"{args.prefix}:{len(produced)}"
            try:
                producer.produce(
                    args.topic,
                    value=value.encode(),
                    on_delivery=lambda err, msg, sent=time.time(): delivered(err, msg, sent),
                )
            except BufferError:
                break
            produced.append(value)
        producer.poll(0.005)
    unflushed = producer.flush(FLUSH_TIMEOUT_S)
    history = [dict(value=v, **outcomes.get(v, {"status": "unknown"})) for v in produced]
    with open(args.history, "w") as f:
        json.dump(history, f)
    count = lambda status: sum(1 for h in history if h["status"] == status)
    print(
        json.dumps(
            {
                "produced": len(produced),
                "acked": count("acked"),
                "failed": count("failed"),
                "unknown": count("unknown"),
                "unflushed": unflushed,
                "fatal": fatal,
                "failed_sample": [h for h in history if h["status"] == "failed"][:5],
            }
        )
    )


def consume(args):
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    stop = stdin_closed() if args.follow else None
    config = client_config(args.bootstrap)
    config.update(
        {
            "group.id": args.group or f"jepsen-{uuid.uuid4()}",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "error_cb": lambda err: print(f"client error: {err}", file=sys.stderr),
        }
    )
    consumer = Consumer(config)
    metadata = consumer.list_topics(args.topic, timeout=READ_TIMEOUT_S)
    partitions = sorted(metadata.topics[args.topic].partitions)
    assert partitions, f"{args.topic} has no partitions"
    if args.group:
        consumer.subscribe([args.topic])
    else:
        consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    reads = []
    next_offset = {p: 0 for p in partitions}
    committed = {}
    counts = {"commit_failures": 0, "reread_below_commit": 0}
    reported = [time.monotonic()]

    def poll():
        messages = consumer.consume(1000, 0.1)
        for m in messages:
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    print(f"read error: {m.error()}", file=sys.stderr)
                continue
            if m.offset() < committed.get(m.partition(), 0):
                counts["reread_below_commit"] += 1
            reads.append([m.partition(), m.offset(), m.value().decode()])
            next_offset[m.partition()] = m.offset() + 1
        if args.group and any(m.error() is None for m in messages):
            try:
                for tp in consumer.commit(asynchronous=False):
                    committed[tp.partition] = max(committed.get(tp.partition, 0), tp.offset)
            except KafkaException as e:  # the coordinator may be away
                counts["commit_failures"] += 1
                print(f"commit failed: {e}", file=sys.stderr)
        if time.monotonic() - reported[0] >= 0.1:
            reported[0] = time.monotonic()
            print(f"consumed {len(reads)}", flush=True)

    if stop is not None:
        while not stop.is_set():
            poll()
    # Then up to the high watermarks of now.
    deadline = time.monotonic() + READ_TIMEOUT_S
    ends = {}
    for p in partitions:
        while True:
            try:
                ends[p] = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=5)[1]
                break
            except Exception as e:  # the broker may still be coming back
                assert time.monotonic() < deadline, f"no watermarks for partition {p}: {e}"
    while any(next_offset[p] < ends[p] for p in partitions):
        assert time.monotonic() < deadline, f"read {next_offset} of {ends} after {READ_TIMEOUT_S} s"
        poll()
    consumer.close()
    with open(args.reads, "w") as f:
        json.dump(reads, f)
    print(json.dumps(dict(read=len(reads), high_watermarks=ends, **counts)))


def sequence(value):
    """(producer prefix, number) of a value `PREFIX:N`; None for a value no producer wrote."""
    prefix, _, number = value.rpartition(":")
    return (prefix, int(number)) if prefix and number.isdigit() else None


def check_histories(histories, reads, final):
    """The checker: `histories` is a list of producer histories, `reads` a list of reads (lists
    of [partition, offset, value]), `final` the read that must hold every acknowledged value."""
    produced = {}
    for history in histories:
        for h in history:
            produced[h["value"]] = h
    # Every observation of a position: the acks, then every read.
    at = {}
    where = {}

    def observe(partition, offset, value):
        at.setdefault((partition, offset), set()).add(value)
        where.setdefault(value, set()).add((partition, offset))

    for value, h in produced.items():
        if h["status"] == "acked":
            observe(h["partition"], h["offset"], value)
    for read in reads:
        for partition, offset, value in read:
            observe(partition, offset, value)

    final_values = {value for _, _, value in final}
    acked = [v for v, h in produced.items() if h["status"] == "acked"]
    lost = [v for v in acked if v not in final_values]
    duplicates = {v: sorted(p) for v, p in where.items() if len(p) > 1}
    conflicts = {f"{p}@{o}": sorted(vs) for (p, o), vs in at.items() if len(vs) > 1}
    seen = set(where)
    unexpected = sorted(v for v in seen if v not in produced)
    failed_visible = sorted(v for v in seen if produced.get(v, {}).get("status") == "failed")
    # Within a partition, each producer's values in the order it produced them.
    reordered = []
    last = {}
    for partition, offset, value in sorted(final, key=lambda r: (r[0], r[1])):
        s = sequence(value)
        if s is None:
            continue
        key = (partition, s[0])
        if key in last and last[key][1] > s[1]:
            reordered.append(f"{partition}@{offset}: {value} after {last[key][0]}")
        last[key] = (value, s[1])
    return {
        "produced": len(produced),
        "acked": len(acked),
        "read": len(final),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "reordered": len(reordered),
        "conflicts": len(conflicts),
        "unexpected": len(unexpected),
        "failed_visible": len(failed_visible),
        "unknown": sum(1 for h in produced.values() if h["status"] == "unknown"),
        "samples": {
            "lost": lost[:10],
            "duplicates": dict(list(duplicates.items())[:10]),
            "reordered": reordered[:10],
            "conflicts": dict(list(conflicts.items())[:10]),
            "unexpected": unexpected[:10],
            "failed_visible": failed_visible[:10],
        },
    }


def first_ack_after(acked, fault):
    """Seconds from a fault `PARTITION@TIME` to the first acknowledgement on that partition of a
    value produced after it (None: none)."""
    partition, _, t = fault.partition("@")
    partition, t = int(partition), float(t)
    after = [h["acked_at"] for h in acked if h["partition"] == partition and h["produced_at"] > t]
    return round(min(after) - t, 3) if after else None


def check(args):
    load = lambda path: json.load(open(path))
    histories = [load(p) for p in args.history]
    reads = [load(p) for p in args.reads]
    final = load(args.final)
    summary = check_histories(histories, reads + [final], final)
    if args.group_reads:
        group_read = {value for path in args.group_reads for _, _, value in load(path)}
        summary["group_missed"] = sum(
            1 for history in histories for h in history if h["status"] == "acked" and h["value"] not in group_read
        )
    if args.fault_at:
        acked = [h for history in histories for h in history if h["status"] == "acked"]
        summary["first_ack_after_fault_s"] = [first_ack_after(acked, t) for t in args.fault_at]
    print(json.dumps(summary))


def self_test(_args):
    """The checker against histories with one known fault each."""
    history = [
        {"value": f"a:{n}", "status": "acked", "partition": n % 2, "offset": n // 2} for n in range(10)
    ] + [{"value": "a:10", "status": "failed", "error": "timed out"}, {"value": "a:11", "status": "unknown"}]
    clean = [[h["partition"], h["offset"], h["value"]] for h in history if h["status"] == "acked"]

    def run(final, reads=()):
        return check_histories([history], list(reads) + [final], final)

    failures = []

    def expect(case, summary, **faults):
        counts = ["lost", "duplicates", "reordered", "conflicts", "unexpected", "failed_visible"]
        want = {k: faults.get(k, 0) for k in counts}
        got = {k: summary[k] for k in counts}
        if got != want:
            failures.append({"case": case, "want": want, "got": got})

    expect("clean", run(clean))
    expect("an acked record missing", run(clean[:-1]), lost=1)
    # a:9 also at offset 5 of partition 1: a value at two offsets.
    expect("a duplicate", run(clean + [[1, 5, "a:9"]]), duplicates=1)
    # Partition 0 holds a:0 a:2 a:4 a:6 a:8 at offsets 0..4: swap a:2 and a:4; the acks said
    # otherwise, so their positions conflict too.
    swapped = [[0, 1, "a:4"] if r == [0, 1, "a:2"] else [0, 2, "a:2"] if r == [0, 2, "a:4"] else r for r in clean]
    expect("reordered", run(swapped), reordered=1, conflicts=2, duplicates=2)
    # An earlier read saw another value at an offset the final read (and the ack) agree on.
    expect("a position that changed", run(clean, [[[0, 0, "a:1"]]]), conflicts=1, duplicates=1)
    expect("a value nobody produced", run(clean + [[1, 5, "b:0"]]), unexpected=1)
    expect("a failed produce visible", run(clean + [[1, 5, "a:10"]]), failed_visible=1)
    expect("an unknown produce visible", run(clean + [[1, 5, "a:11"]]))
    print(json.dumps({"cases": 8, "failures": failures}))
    sys.exit(1 if failures else 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=int, default=1000, help="records per second")
    p.add_argument("--prefix", default="p", help="values are PREFIX:N")
    p.add_argument("--history", required=True)
    p.add_argument("--config", action="append", default=[], help="KEY=VALUE, a librdkafka setting")
    p.set_defaults(run=produce)
    c = commands.add_parser("consume")
    c.add_argument("--topic", required=True)
    c.add_argument("--reads", required=True)
    c.add_argument("--follow", action="store_true")
    c.add_argument("--group", help="read as a member of this consumer group")
    c.set_defaults(run=consume)
    k = commands.add_parser("check")
    k.add_argument("--history", action="append", required=True)
    k.add_argument("--reads", action="append", default=[])
    k.add_argument("--final", required=True)
    k.add_argument("--group-reads", action="append", default=[])
    k.add_argument("--fault-at", action="append", default=[], help="PARTITION@TIME: a partition's fault, wall-clock")
    k.set_defaults(run=check)
    commands.add_parser("self-test").set_defaults(run=self_test)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
