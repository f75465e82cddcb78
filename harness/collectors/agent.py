"""The collector agent: a child process that samples the GPUs and scrapes servers.

It runs apart from the load generator so that parsing a 100 KB ``/metrics`` page or a slow
NVML call never delays a request's send or a chunk's timestamp. Protocol over its stdio:
the parent writes one JSON plan line; the agent takes a first reading, prints
``ready <json>``, samples every interval, and on ``stop`` (or end of input) takes a last
reading, prints ``done <json status>`` and exits. Readings go to the run folder as they come:
``snapshots.jsonl`` (server snapshots) and ``samples.jsonl`` (GPU points).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from harness.collectors.nvml import NvmlSampler
from harness.collectors.scrape import Scraper
from harness.collectors.series import SampleLog

SNAPSHOTS_NAME = "snapshots.jsonl"


def build_scrapers(plan: dict[str, Any]) -> list[Scraper]:
    return [
        Scraper(
            name=str(s["name"]),
            url=str(s["url"]),
            kind=s.get("kind"),
            selector=dict(s.get("selector", {})),
            api_key_env=s.get("api_key_env"),
            timeout_s=float(s.get("timeout_s", 5.0)),
        )
        for s in plan.get("scrape", [])
    ]


class Agent:
    """Scrape every source and sample NVML at the plan's interval until told to stop."""

    def __init__(self, plan: dict[str, Any]) -> None:
        run_dir = Path(plan["run_dir"])
        self.interval = float(plan.get("interval_s", 1.0))
        self.scrapers = build_scrapers(plan)
        self._snap_file: IO[str] = (run_dir / SNAPSHOTS_NAME).open("a", encoding="utf-8")
        self.samples = SampleLog(run_dir)
        self.gpu_mode = str(plan.get("gpu", "off"))
        self.nvml: Any = None
        self.gpu_info: dict[str, Any] = {"available": False, "reason": "GPU sampling off"}
        if self.gpu_mode != "off":
            self.nvml = NvmlSampler(
                interval_s=self.interval, devices=plan.get("gpu_devices"), sink=self.samples.write
            )
        self._stop = threading.Event()
        self.ticks = 0

    def start(self) -> None:
        if self.nvml is not None:
            self.nvml.start()
            self.gpu_info = self.nvml.info()
        self.tick()

    def tick(self) -> list[Any]:
        """Scrape every server once; returns what was read (to tell whether it changed)."""
        read: list[Any] = []
        for scraper in self.scrapers:
            snap = scraper.scrape()
            if snap is not None:
                self._snap_file.write(json.dumps(snap.to_json(scraper.name)) + "\n")
                read.append(snap.values)
        self._snap_file.flush()
        self.ticks += 1
        return read

    def loop(self) -> None:
        """Tick on an absolute schedule; a slow tick skips slots rather than bunching up."""
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.tick()
            now = time.monotonic()
            next_at += self.interval
            if next_at < now:
                next_at = now + self.interval

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> dict[str, Any]:
        """The last readings: again each interval until two agree (at most three more), since
        a server may count a request just after answering it (LiteLLM logs asynchronously)."""
        last = self.tick()
        for _ in range(3):
            if not self.scrapers:
                break
            time.sleep(self.interval)
            now = self.tick()
            if now == last:
                break
            last = now
        if self.nvml is not None:
            self.nvml.stop()
            self.gpu_info = self.nvml.info()
        self._snap_file.close()
        self.samples.close()
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "servers": [s.status() for s in self.scrapers],
            "gpu": self.gpu_info,
        }


def run_agent(stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    plan = json.loads(stdin.readline())
    agent = Agent(plan)
    agent.start()
    print("ready " + json.dumps(agent.status()), file=stdout, flush=True)
    sampler = threading.Thread(target=agent.loop, name="collector", daemon=True)
    sampler.start()
    for line in stdin:  # blocks until "stop" or the parent closes our input
        if line.strip() == "stop":
            break
    agent.stop()
    sampler.join(timeout=10 * agent.interval + 10)
    print("done " + json.dumps(agent.finish()), file=stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_agent())
