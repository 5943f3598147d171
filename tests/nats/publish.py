"""Publishes readings or events to NATS JetStream with the `nats` client
from PyPI (nats-io/nats.py), as a device gateway speaking NATS would:
each message carries a Nats-Msg-Id, every publish waits for the stream's
acknowledgement, and one that fails (a node killed, a leader being
elected, the stream full) is sent again with the same id, so the stream
stores it once.

    publish.py --servers nats://a,nats://b --prefix P --devices 10 \
        --count 50000 --t0 MS [--events] [--window 256] [--give-up-after S]

Prints one JSON line: published, retries, refusals by error, duplicates.
"""
import argparse
import asyncio
import json
import sys
import time

import nats
from nats.js.errors import APIError


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--servers", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--site", default="hv")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--device-prefix", default="nt")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--t0", type=int, required=True)
    p.add_argument("--events", action="store_true")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--give-up-after", type=float, default=120.0)
    a = p.parse_args()

    errors = {}
    retries = 0
    duplicates = 0
    refused_for_good = 0

    async def on_error(e):
        errors.setdefault("connection: " + type(e).__name__, 0)

    nc = await nats.connect(
        servers=a.servers.split(","),
        dont_randomize=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        error_cb=on_error,
    )
    js = nc.jetstream(timeout=5)

    def message(i):
        device = f"{a.device_prefix}-{i % a.devices}"
        if a.events:
            subject = f"{a.prefix}.{a.site}.{device}.events"
            body = {"ts": a.t0 + i, "type": "fault", "code": "entrapment"}
        else:
            subject = f"{a.prefix}.{a.site}.{device}.telemetry"
            body = {"ts": a.t0 + i, "metrics": {"energy_kwh": i}}
        return subject, json.dumps(body).encode(), f"{a.prefix}-{a.device_prefix}-{i}"

    async def one(i):
        nonlocal retries, duplicates, refused_for_good
        subject, payload, msg_id = message(i)
        started = time.monotonic()
        while True:
            try:
                ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
                if ack.duplicate:
                    duplicates += 1
                return
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                # Timeouts, no responders or no stream response while a
                # leader is elected, a reconnection, the stream refusing
                # (full): all sent again, with the same id.
                key = type(e).__name__ + (f" {e.description}" if isinstance(e, APIError) else "")
                errors[key] = errors.get(key, 0) + 1
                if time.monotonic() - started > a.give_up_after:
                    refused_for_good += 1
                    return
                retries += 1
                await asyncio.sleep(0.1)

    sem = asyncio.Semaphore(a.window)

    async def bounded(i):
        async with sem:
            await one(i)

    started = time.monotonic()
    await asyncio.gather(*(bounded(i) for i in range(a.count)))
    elapsed = time.monotonic() - started
    await nc.drain()
    print(json.dumps({
        "published": a.count - refused_for_good,
        "refused_for_good": refused_for_good,
        "retries": retries,
        "duplicates": duplicates,
        "errors": errors,
        "seconds": round(elapsed, 2),
    }))
    return 0


sys.exit(asyncio.run(main()))
