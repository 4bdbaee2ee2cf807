"""Failover probe for scripts/perf-replication: a steady acks=all producer (confluent-kafka,
idempotent) on TOPIC; after WARMUP seconds it kill -9s the leader's PID and records when each
write is acknowledged. Prints one JSON object: the gap from the kill to the first acknowledgement
after it (the old leader, dead, can acknowledge nothing more), and the longest gap between two
consecutive acknowledgements.

    python scripts/failover_probe.py BOOTSTRAP TOPIC LEADER_PID
"""

import json
import os
import signal
import sys
import time

from confluent_kafka import Producer

WARMUP_S = 3.0
AFTER_S = 3.0  # acknowledgements to see after the first one following the kill
DEADLINE_S = 90.0
INTERVAL_S = 0.001  # one 100-byte write per millisecond


def main():
    bootstrap, topic, leader_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    acks = []
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acks.append(time.monotonic())

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "message.timeout.ms": int(DEADLINE_S * 1000),
        }
    )
    start = time.monotonic()
    killed_at = None
    payload = b"x" * 100
    while True:
        now = time.monotonic()
        if killed_at is None and now - start >= WARMUP_S:
            os.kill(leader_pid, signal.SIGKILL)
            killed_at = time.monotonic()
        after = [t for t in acks if killed_at is not None and t > killed_at]
        if after and now - after[0] >= AFTER_S:
            break
        if now - start > DEADLINE_S:
            break
        try:
            producer.produce(topic, payload, on_delivery=delivered)
        except BufferError:
            pass  # the queue is full while no leader answers; keep polling
        producer.poll(INTERVAL_S)
    producer.flush(30)
    after = [t for t in acks if t > killed_at]
    gaps = [b - a for a, b in zip(acks, acks[1:])]
    print(
        json.dumps(
            {
                "acks_before_kill": sum(1 for t in acks if t <= killed_at),
                "acks_after_kill": len(after),
                "kill_to_first_ack_s": (after[0] - killed_at) if after else None,
                "longest_ack_gap_s": max(gaps) if gaps else None,
                "errors": errors[:5],
                "error_count": len(errors),
            }
        )
    )


if __name__ == "__main__":
    main()
