"""The reference client: aiohttp on uvloop, one event loop, N tasks in a closed loop.

Each task sends its next request when the last one ends, reads the body line by line,
stamps each line with time.monotonic() as it is handed over, parses every data line as
JSON and keeps the time of those carrying content; it reads to the end of the body so
aiohttp returns the connection to its keep-alive pool.

    python reference_side.py URL STREAMS WARMUP_S DURATION_S OUT_NPZ
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from window import HEADERS, PATH, Window, body_for, save


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


async def run(base: str, streams: int, warmup_s: float, duration_s: float, out: Path) -> None:
    url = base + PATH
    window = Window(warmup_s, duration_s)
    done: list[tuple[int, list[float], bool]] = []
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def user() -> None:
            while time.monotonic() < window.end:
                rid = next(counter)
                times, failed = await one(session, url, rid)
                done.append((rid, times, failed))

        users = [asyncio.create_task(user()) for _ in range(streams)]
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        window.open()
        await asyncio.sleep(max(0.0, window.end - time.monotonic()))
        window.close()
        await asyncio.wait(users, timeout=30)
    save(out, window, done)


def main() -> None:
    base, streams = sys.argv[1], int(sys.argv[2])
    warmup_s, duration_s, out = float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
    uvloop.run(run(base, streams, warmup_s, duration_s, out))


if __name__ == "__main__":
    main()
