"""The reference client: aiohttp on uvloop, one event loop, N tasks in a closed loop.

Each task sends its next request when the last one ends, reads the body line by line,
stamps each line with time.monotonic() as it is handed over, parses every data line as
JSON and keeps the time of those carrying content; it reads to the end of the body so
aiohttp returns the connection to its keep-alive pool.

With --rate R (open loop) requests go instead at Poisson arrival times, R per second: the
send times are fixed in advance (start + running sum of exponential gaps of mean 1/R, numpy
default_rng(1)), each request is its own task, and STREAMS is the connection pool size.

    python reference_side.py URL STREAMS WARMUP_S DURATION_S OUT_NPZ [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from window import HEADERS, PATH, Window, body_for, poisson_schedule, save


async def one(session: aiohttp.ClientSession, url: str, rid: int) -> tuple[list[float], bool]:
    times: list[float] = []
    done = False
    async with session.post(url, data=body_for(rid), headers=HEADERS) as resp:
        async for line in resp.content:
            t = time.monotonic()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            chunk = json.loads(payload)
            choices = chunk.get("choices")
            if choices and choices[0].get("delta", {}).get("content"):
                times.append(t)
    return times, not done or resp.status != 200


async def run(
    base: str, streams: int, warmup_s: float, duration_s: float, out: Path, rate: float | None
) -> None:
    url = base + PATH
    window = Window(warmup_s, duration_s)
    t0 = window.start - warmup_s
    done: list[tuple[int, list[float], bool]] = []
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def user() -> None:
            while time.monotonic() < window.end:
                rid = next(counter)
                times, failed = await one(session, url, rid)
                done.append((rid, times, failed))

        async def request(rid: int) -> None:
            times, failed = await one(session, url, rid)
            done.append((rid, times, failed))

        async def dispatch(schedule: list[float]) -> None:
            tasks: list[asyncio.Task[None]] = []
            for intended in schedule:
                await asyncio.sleep(max(0.0, intended - time.monotonic()))
                tasks.append(asyncio.create_task(request(next(counter))))
            if tasks:
                await asyncio.wait(tasks, timeout=30)

        if rate is None:
            users = [asyncio.create_task(user()) for _ in range(streams)]
        else:
            users = [asyncio.create_task(dispatch(poisson_schedule(rate, t0, window.end)))]
        await window.measure_async(users)
    save(out, window, done)


def main() -> None:
    parser = argparse.ArgumentParser(description="The aiohttp + uvloop reference client.")
    parser.add_argument("url")
    parser.add_argument("streams", type=int)
    parser.add_argument("warmup_s", type=float)
    parser.add_argument("duration_s", type=float)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests/s")
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    uvloop.run(run(args.url, args.streams, args.warmup_s, args.duration_s, args.out, args.rate))


if __name__ == "__main__":
    main()
