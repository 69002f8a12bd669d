"""Publishes to a NATS JetStream stream with IN_FLIGHT publishes awaiting their acks at once,
for SECONDS; prints one JSON line: acks/s and latency percentiles (ms).

    python jetstream_pub.py SERVERS SUBJECT IN_FLIGHT SECONDS PAYLOAD_BYTES

Used by bench/cluster-vs-jetstream (several of these processes run side by side, so that one
Python process does not bound the row).
"""

import asyncio
import json
import sys
import time

import nats


async def main() -> None:
    servers, subject = sys.argv[1].split(","), sys.argv[2]
    in_flight, seconds, size = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    nc = await nats.connect(servers=servers)
    js = nc.jetstream()
    payload = b"x" * size
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await js.publish(subject, payload)
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await nc.close()
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    print(json.dumps({"acks": len(latencies), "acks_per_s": len(latencies) / elapsed,
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))


asyncio.run(main())
