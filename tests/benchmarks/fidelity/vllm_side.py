"""The vLLM client: per request, what `vllm bench serve --backend openai-chat` does.

Mirrored from vllm-project/vllm (read at these commits; a release tag was not pinned):

- vllm/benchmarks/lib/endpoint_request_func.py @ 3aee4a4f4c4d1a2a7af3ebdb88c768e459e6c602:
  `StreamedResponseHandler` and `async_request_openai_chat_completions`. Per request: a fresh
  headers dict (Authorization from OPENAI_API_KEY when set), `st = time.perf_counter()`, POST,
  on status 200 `response.content.iter_any()`, each piece decoded and buffered, split on blank
  lines, the `data:` lines kept (a trailing piece that already parses as JSON counts as a
  message too); per message `time.perf_counter()` taken before `json.loads`; a message with
  non-empty `choices` is a token: the first sets ttft, each later one appends an ITL; `usage`
  sets output_tokens; every non-[DONE] message moves the last-token time. Success is status
  200 and no exception (a stream cut short without [DONE] still counts as a success). Then
  `pbar.update(1)`.
- vllm/benchmarks/serve.py @ def9ce85ba1079af970a58ed3d42dd861ae35d58: `main()` runs
  `asyncio.run(...)` (the default asyncio loop; vLLM's bench does not use uvloop),
  `main_async()` calls `freeze_gc_heap()` (gc.collect(0), (1), (2) then gc.freeze(), from
  vllm/utils/gc_utils.py) before the run; `benchmark()` makes
  `TCPConnector(limit=max_concurrency, limit_per_host=max_concurrency, ttl_dns_cache=300,
  use_dns_cache=True, keepalive_timeout=60, enable_cleanup_closed=True, force_close=False,
  ssl="https://" in api_url)` and `ClientSession(connector=..., trust_env=True,
  timeout=ClientTimeout(total=6 h))`, wraps each request in `async with
  asyncio.Semaphore(max_concurrency)`, shows a tqdm bar, and with a finite --request-rate
  sends on a precomputed schedule (`get_request`: sleep until start + delay, then
  create_task). The arrival time of token k is what `calculate_metrics` rebuilds:
  start_time + ttft + itl[0] + ... + itl[k-1].

time.perf_counter() is clock_gettime(CLOCK_MONOTONIC) on Linux, the clock of time.monotonic()
that the stamped server and `Window` use, so the times compare directly.

How this differs from `vllm bench serve`, and why:

- The body is window.body_for(rid) sent as bytes with window.HEADERS (as every client here
  does, so the server does the same work), not a dict serialized by aiohttp's `json=`. So the
  wire carries `Accept: text/event-stream` and `Accept-Encoding: identity` where vLLM sends
  aiohttp's defaults, and the prompt/fields are ours, not a dataset sample.
- Closed loop (no --rate): STREAMS tasks each send their next request when the last ends,
  until the window ends, through the semaphore (never contended here). vLLM's equivalent
  (`--request-rate inf --max-concurrency STREAMS`) creates one task per request up front,
  all waiting on the semaphore: one more task hand-off per request than here.
- Open loop (--rate R): the schedule is the one reference_side.py uses too (numpy
  default_rng(1) exponential gaps, mean 1/R, absolute from the start, until the window
  ends), slept on with time.monotonic(); vLLM draws gamma gaps (shape 1: exponential) from
  the global numpy RNG seeded by --seed, rescales them so that num_prompts requests take
  num_prompts / R seconds, and sleeps on time.time().
- Per request, the payload dict, its json.dumps (aiohttp's `json=`) and the URL-suffix check
  (`_validate_api_url`) are not done: the body is ready-made bytes.
- No dataset, tokenizer, ready-check request, warm-up requests, profiler calls or result
  JSON; the warm-up is the window's. The tqdm bar has no total (the count is open).
- Each request's arrival times are rebuilt after the run, as `calculate_metrics` does, and
  saved with window.save(); failed = not success.

    python vllm_side.py URL STREAMS WARMUP_S DURATION_S OUT_NPZ [--rate R] [--disable-tqdm]

With --rate R, requests go at Poisson arrival times (R per second), each its own task, and
STREAMS is the connection pool size (and semaphore) as vLLM's --max-concurrency makes it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from tqdm.asyncio import tqdm  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).parent))
from window import HEADERS, PATH, Window, body_for, poisson_schedule, save


class StreamedResponseHandler:
    """Buffers iter_any() pieces and hands back complete `data:` messages (vLLM's)."""

    def __init__(self) -> None:
        self.buffer = ""

    def add_chunk(self, chunk_bytes: bytes) -> list[str]:
        messages: list[str] = []
        if not chunk_bytes:
            return messages
        self.buffer += chunk_bytes.decode("utf-8")
        # Blank lines end SSE events; other fields than data (event:, id:) are dropped.
        while "\n\n" in self.buffer:
            message, self.buffer = self.buffer.split("\n\n", 1)
            messages.extend(
                line for line in message.strip().splitlines() if line.startswith("data:")
            )
        # A last event without its blank line counts once it is [DONE] or whole JSON.
        if self.buffer.startswith("data:"):
            rest = self.buffer.removeprefix("data:").strip()
            if rest == "[DONE]":
                messages.append(self.buffer.strip())
                self.buffer = ""
            elif rest:
                try:
                    json.loads(rest)
                except json.JSONDecodeError:
                    pass  # incomplete: wait for more
                else:
                    messages.append(self.buffer.strip())
                    self.buffer = ""
        return messages


@dataclass
class RequestFuncOutput:
    """vLLM's per-request record."""

    generated_text: str = ""
    success: bool = False
    latency: float = 0.0
    output_tokens: int = 0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    tpot: float = 0.0
    prompt_len: int = 0
    error: str = ""
    start_time: float = 0.0

    def token_times(self) -> list[float]:
        """Arrival of each token, rebuilt from start, ttft and ITLs as calculate_metrics does."""
        if self.ttft == 0.0:
            return []
        times = [self.start_time + self.ttft]
        for itl in self.itl:
            times.append(times[-1] + itl)
        return times


def _get_headers() -> dict[str, str]:
    headers = dict(HEADERS)
    api_key = os.environ.get("OPENAI_API_KEY")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def request_chat(
    session: aiohttp.ClientSession, url: str, rid: int, pbar: Any | None
) -> RequestFuncOutput:
    """async_request_openai_chat_completions, with our body and headers."""
    body = body_for(rid)
    headers = _get_headers()
    output = RequestFuncOutput()
    generated_text = ""
    ttft = 0.0
    st = time.perf_counter()
    output.start_time = st
    most_recent_timestamp = st
    try:
        async with session.post(url=url, data=body, headers=headers) as response:
            if response.status == 200:
                handler = StreamedResponseHandler()
                async for chunk_bytes in response.content.iter_any():
                    for message in handler.add_chunk(chunk_bytes):
                        if message.startswith(":"):  # SSE comment (ping)
                            continue
                        chunk = message.removeprefix("data:").strip()
                        if chunk == "[DONE]":
                            continue
                        timestamp = time.perf_counter()
                        data = json.loads(chunk)
                        if choices := data.get("choices"):
                            content = choices[0]["delta"].get("content") or choices[0]["delta"].get(
                                "reasoning_content"
                            )
                            if ttft == 0.0:
                                ttft = timestamp - st
                                output.ttft = ttft
                            else:
                                output.itl.append(timestamp - most_recent_timestamp)
                            generated_text += content or ""
                        elif usage := data.get("usage"):
                            output.output_tokens = usage.get("completion_tokens")
                        most_recent_timestamp = timestamp
                output.generated_text = generated_text
                output.success = True
                output.latency = most_recent_timestamp - st
            else:
                output.error = response.reason or ""
                output.success = False
    except Exception:
        output.success = False
        output.error = traceback.format_exc()
    if pbar is not None:
        pbar.update(1)
    return output


async def get_request(schedule: list[float]) -> AsyncGenerator[float, None]:
    """vLLM's get_request: sleep until each precomputed send time, then yield."""
    for intended in schedule:
        sleep_s = intended - time.monotonic()
        if sleep_s > 0:
            await asyncio.sleep(sleep_s)
        yield intended


def freeze_gc_heap() -> None:
    """vLLM's: push what exists now to the oldest generation, then keep GC off it."""
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    gc.freeze()


async def run(
    base: str,
    streams: int,
    warmup_s: float,
    duration_s: float,
    out: Path,
    rate: float | None,
    disable_tqdm: bool,
) -> None:
    freeze_gc_heap()
    url = base + PATH
    window = Window(warmup_s, duration_s)
    t0 = window.start - warmup_s
    done: list[tuple[int, RequestFuncOutput]] = []
    counter = itertools.count()
    connector = aiohttp.TCPConnector(
        limit=streams,
        limit_per_host=streams,
        ttl_dns_cache=300,
        use_dns_cache=True,
        keepalive_timeout=60,
        enable_cleanup_closed=True,
        force_close=False,
        ssl=("https://" in url),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        trust_env=True,
        timeout=aiohttp.ClientTimeout(total=6 * 60 * 60),
    )
    pbar = None if disable_tqdm else tqdm()
    semaphore = asyncio.Semaphore(streams)

    async def limited_request_func(rid: int) -> None:
        async with semaphore:
            output = await request_chat(session, url, rid, pbar)
        done.append((rid, output))

    async def user() -> None:
        while time.monotonic() < window.end:
            await limited_request_func(next(counter))

    async def dispatch(schedule: list[float]) -> None:
        tasks: list[asyncio.Task[None]] = []
        async for _ in get_request(schedule):
            tasks.append(asyncio.create_task(limited_request_func(next(counter))))
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    if rate is None:
        users = [asyncio.create_task(user()) for _ in range(streams)]
    else:
        users = [asyncio.create_task(dispatch(poisson_schedule(rate, t0, window.end)))]
    await window.measure_async(users)
    if pbar is not None:
        pbar.close()
    await session.close()
    save(out, window, [(rid, o.token_times(), not o.success) for rid, o in done])


def main() -> None:
    parser = argparse.ArgumentParser(description="vllm bench serve's chat client, timed.")
    parser.add_argument("url")
    parser.add_argument("streams", type=int)
    parser.add_argument("warmup_s", type=float)
    parser.add_argument("duration_s", type=float)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests/s")
    parser.add_argument("--disable-tqdm", action="store_true", help="as vLLM's flag")
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    asyncio.run(
        run(
            args.url,
            args.streams,
            args.warmup_s,
            args.duration_s,
            args.out,
            args.rate,
            args.disable_tqdm,
        )
    )


if __name__ == "__main__":
    main()
