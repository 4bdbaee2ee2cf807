"""confluent-kafka (librdkafka) idempotent producer at a steady rate, until its stdin closes.

Record values are the decimal numbers 0, 1, 2, ... in production order. The test kills and
restarts the broker meanwhile; librdkafka retries whatever went unanswered with the same
sequence numbers. Prints one JSON summary line: how many were produced, the values whose
delivery was acknowledged, and any delivery or client errors.
"""
import argparse
import json
import sys
import threading
import time

from confluent_kafka import Producer

FLUSH_TIMEOUT_S = 90


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=int, default=2000, help="records per second")
    args = parser.parse_args()

    stop = threading.Event()

    def wait_for_stdin_to_close():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()

    client_errors = []
    acked = []
    failed = []

    def delivered(err, msg):
        if err is None:
            acked.append(int(msg.value()))
        else:
            failed.append(f"{int(msg.value())}: {err}")

    def on_error(err):
        # Broker-down errors are expected here; a fatal one ends idempotence.
        if err.fatal():
            client_errors.append(str(err))
        print(f"client error: {err}", file=sys.stderr)

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": FLUSH_TIMEOUT_S * 1000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "retry.backoff.ms": 20,
            "error_cb": on_error,
        }
    )
    produced = 0
    start = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * args.rate)
        while produced < due:
            try:
                producer.produce(args.topic, value=b"%d" % produced, on_delivery=delivered)
            except BufferError:
                break
            produced += 1
        producer.poll(0.005)
    left = producer.flush(FLUSH_TIMEOUT_S)
    print(
        json.dumps(
            {
                "produced": produced,
                "unflushed": left,
                "acked": acked,
                "failed": failed[:20],
                "failed_count": len(failed),
                "fatal": client_errors,
            }
        )
    )


if __name__ == "__main__":
    main()
