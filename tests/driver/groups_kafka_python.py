"""Consumer groups with kafka-python: rebalances, a crashed member, broadcast and unicast,
committed offsets that survive broker restarts.

Each consumer runs in its own process, so that one can be killed with SIGKILL as a crashed
client would be. Prints one JSON summary line; exits non-zero (via assert) on any failure.
"""
import argparse
import faulthandler
import json
import multiprocessing as mp
import os
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata


def _await_join_in_flight(need_rejoin):
    """Works around a kafka-python 3.0.12 stall (see tests/groups.rs): a leader that rejoins
    because its metadata changed stops "needing" the rejoin as soon as it has computed the
    assignment (`_perform_assignment` updates the snapshot that `need_rejoin` compares), so a
    poll whose timeout ended before SyncGroup's answer leaves that join unawaited for good:
    the assignment is never applied and heartbeats stay off until the session expires. A join
    still in flight is counted as needing the rejoin, so the next poll awaits it."""

    def patched(self):
        return need_rejoin(self) or self._join_task is not None

    return patched


ConsumerCoordinator.need_rejoin = _await_join_in_flight(ConsumerCoordinator.need_rejoin)

DEADLINE_S = 90
# Fresh interpreters, not forks: a fork copies locks that the parent's client threads may hold
# at that instant, and the child then hangs on them.
mp = mp.get_context("spawn")
SESSION_TIMEOUT_MS = 6000


def consumer_process(bootstrap, topic, group, name, events, stop):
    """Consumes `topic` in `group`, reporting assignments, records and commits to `events`."""
    # A consumer still running after this long is stuck: show where, for the test's output.
    faulthandler.dump_traceback_later(45, exit=False)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=500,
        max_poll_records=20,
    )
    assignment = None
    parent = os.getppid()
    # Stop when told to, or when the driver is gone (it failed, or was killed on a deadline).
    while not stop.is_set() and os.getppid() == parent:
        batches = consumer.poll(timeout_ms=100)
        current = sorted(tp.partition for tp in consumer.assignment())
        if current != assignment:
            assignment = current
            events.put(("assignment", name, current))
        records = [(r.partition, r.offset) for batch in batches.values() for r in batch]
        if not records:
            continue
        events.put(("records", name, records))
        try:
            consumer.commit()
            events.put(("committed", name, records))
        except CommitFailedError:
            # A rebalance took the partitions: their new owner starts from the last commit.
            events.put(("commit_failed", name, records))
    consumer.close()


class Group:
    """Consumer processes of one group and what they reported."""

    def __init__(self, bootstrap, topic, group, run):
        self.bootstrap, self.topic, self.group, self.run = bootstrap, topic, group, run
        self.processes, self.stops, self.assignments = {}, {}, {}

    def start(self, name):
        stop = mp.Event()
        # A queue per process: a consumer killed in the middle of a put would otherwise leave
        # a shared queue's lock held, and silence every other consumer. A SimpleQueue, whose
        # put has written the event to the pipe when it returns: a Queue's put only hands it to
        # a feeder thread, so a consumer killed right after committing could take the report
        # of records it consumed and committed with it, and nobody would report them.
        events = mp.SimpleQueue()
        self.run.queues.append(events)
        process = mp.Process(
            target=consumer_process, args=(self.bootstrap, self.topic, self.group, name, events, stop), daemon=True
        )
        process.start()
        self.processes[name], self.stops[name] = process, stop
        self.assignments[name] = []

    def kill(self, name):
        self.processes[name].kill()
        self.processes[name].join()
        del self.processes[name]
        del self.assignments[name]

    def stop_all(self):
        for stop in self.stops.values():
            stop.set()
        for process in self.processes.values():
            process.join(timeout=20)
            assert process.exitcode == 0, f"consumer exited with {process.exitcode}"


class Run:
    """Collects events from every consumer process."""

    def __init__(self):
        self.queues = []
        self.groups = []
        self.consumed = {}  # name -> list of (partition, offset)
        self.committed = {}  # name -> {partition: next offset}
        self.failed_commits = set()  # (partition, offset) whose commit failed

    def pump(self):
        """Handles every event waiting in the consumers' queues, or pauses briefly if none."""
        events = []
        for q in self.queues:
            while not q.empty():
                events.append(q.get())
        if not events:
            time.sleep(0.05)
        for event in events:
            self.handle(event)

    def handle(self, event):
        kind, name, data = event
        if kind == "assignment":
            for group in self.groups:
                if name in group.assignments:
                    group.assignments[name] = data
        elif kind == "records":
            self.consumed.setdefault(name, []).extend(data)
        elif kind == "committed":
            for partition, offset in data:
                last = self.committed.setdefault(name, {})
                last[partition] = max(last.get(partition, 0), offset + 1)
        elif kind == "commit_failed":
            self.failed_commits.update(data)

    def wait(self, condition, what):
        deadline = time.time() + DEADLINE_S
        while not condition():
            assert time.time() < deadline, f"timed out waiting for {what}"
            self.pump()

    def records_of(self, names):
        return [r for n in names for r in self.consumed.get(n, [])]


def balanced(group, partitions, sizes):
    """Every partition owned by exactly one member, with the given sizes."""
    owned = [p for a in group.assignments.values() for p in a]
    return sorted(owned) == list(range(partitions)) and sorted(len(a) for a in group.assignments.values()) == sizes


def create_topic(bootstrap, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()


def produce(bootstrap, topic, start, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [producer.send(topic, key=b"key-%d" % i, value=b"value-%d" % i) for i in range(start, start + count)]
    producer.flush()
    placed = [f.get(timeout=30) for f in futures]
    producer.close()
    return {(m.partition, m.offset) for m in placed}


def rebalance(bootstrap):
    topic = "rebalance"
    create_topic(bootstrap, topic, 6)
    run = Run()
    group = Group(bootstrap, topic, "workers", run)
    run.groups.append(group)
    produced = set()

    for name in ("c0", "c1", "c2"):
        group.start(name)
    run.wait(lambda: balanced(group, 6, [2, 2, 2]), "three members with two partitions each")
    produced |= produce(bootstrap, topic, 0, 300)
    run.wait(lambda: set(run.records_of(group.assignments)) >= produced, "the first 300 records")

    group.start("c3")
    run.wait(lambda: balanced(group, 6, [1, 1, 2, 2]), "the fourth member to get partitions")
    produced |= produce(bootstrap, topic, 300, 300)
    run.wait(lambda: set(run.records_of(group.assignments)) >= produced, "records after the fourth joined")

    # Crash a member that owns partitions while records are flowing to it.
    victim = max(group.assignments, key=lambda n: len(group.assignments[n]))
    victim_partitions = set(group.assignments[victim])
    produced |= produce(bootstrap, topic, 600, 300)
    before = len(run.consumed.get(victim, []))
    run.wait(lambda: len(run.consumed.get(victim, [])) > before, "the victim to consume")
    group.kill(victim)
    killed_at = time.time()
    run.wait(lambda: balanced(group, 6, [2, 2, 2]), "the crashed member's partitions to move")
    moved_after = time.time() - killed_at
    run.wait(lambda: set(run.records_of(list(group.assignments) + [victim])) >= produced, "every record")
    group.stop_all()
    run.pump()

    consumed = run.records_of(run.consumed)
    seen, duplicates = set(), []
    for record in consumed:
        if record in seen:
            duplicates.append(record)
        seen.add(record)
    assert seen >= produced, f"{len(produced - seen)} records never consumed"
    victim_committed = run.committed.get(victim, {})
    for partition, offset in duplicates:
        after_victims_commit = partition in victim_partitions and offset >= victim_committed.get(partition, 0)
        assert after_victims_commit or (partition, offset) in run.failed_commits, (
            f"duplicate {partition}:{offset} is neither after the crashed member's last commit nor from a failed commit"
        )
    return {
        "produced": len(produced),
        "consumed": len(consumed),
        "duplicates": len(duplicates),
        "moved_after_s": round(moved_after, 2),
    }


def broadcast(bootstrap):
    topic = "broadcast"
    create_topic(bootstrap, topic, 4)
    run = Run()
    unicast = Group(bootstrap, topic, "shared", run)
    other = Group(bootstrap, topic, "solo", run)
    run.groups += [unicast, other]
    unicast.start("a0")
    unicast.start("a1")
    other.start("b0")
    run.wait(lambda: balanced(unicast, 4, [2, 2]) and balanced(other, 4, [4]), "both groups to settle")
    assignments = {name: list(a) for name, a in unicast.assignments.items()}
    produced = produce(bootstrap, topic, 0, 400)
    run.wait(
        lambda: set(run.records_of(["a0", "a1"])) >= produced and set(run.records_of(["b0"])) >= produced,
        "both groups to read everything",
    )
    unicast.stop_all()
    other.stop_all()
    assert unicast.assignments == assignments, "a rebalance happened while records flowed"
    a0, a1 = set(run.records_of(["a0"])), set(run.records_of(["a1"]))
    assert not (a0 & a1), f"{len(a0 & a1)} records went to both members of one group"
    assert len(run.records_of(["a0", "a1"])) == len(produced), "a record was delivered twice within the group"
    return {"group_shared": len(a0 | a1), "group_solo": len(set(run.records_of(["b0"])))}


def commit(bootstrap, topic, group, upto):
    """Consumes from the group's position until `upto`, commits exactly `upto`, leaves."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    tp = TopicPartition(topic, 0)
    first, deadline = None, time.time() + DEADLINE_S
    position = None
    while (position is None or position < upto) and time.time() < deadline:
        # A poll long enough for the whole join: kafka-python 3.0.12 drops an assignment whose
        # SyncGroup answer arrives after the poll that sent it timed out (see tests/groups.rs).
        for r in [r for batch in consumer.poll(timeout_ms=5000).values() for r in batch]:
            first = r.offset if first is None else first
            position = r.offset + 1
    assert position is not None and position >= upto, f"consumed only up to {position}"
    consumer.commit({tp: OffsetAndMetadata(upto, "checkpoint", -1)})
    committed = consumer.committed(tp)
    consumer.close()
    return {"first": first, "committed": committed}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("scenario", choices=["rebalance", "broadcast", "commit"])
    parser.add_argument("--topic")
    parser.add_argument("--group")
    parser.add_argument("--upto", type=int)
    args = parser.parse_args()
    if args.scenario == "rebalance":
        summary = rebalance(args.bootstrap)
    elif args.scenario == "broadcast":
        summary = broadcast(args.bootstrap)
    else:
        summary = commit(args.bootstrap, args.topic, args.group, args.upto)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
