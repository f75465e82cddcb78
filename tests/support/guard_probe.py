"""Run a LoadGuard for a while, optionally beside a CPU hog, and print its report as JSON.

Run as a script in a child process: the guard needs gevent's loop, and the pytest process is
neither gevent-patched nor should its CPU use be measured. Usage:
``python guard_probe.py SECONDS BUSY_MS`` (BUSY_MS 0: an idle loop).
"""

from __future__ import annotations

import json
import sys
import time

import gevent
import psutil  # type: ignore[import-untyped]

from harness.load.guard import LoadGuard


def hog(busy_s: float) -> None:
    """Hold the loop busy_s at a time, then let it run its timers (a 1 ms timer, not
    sleep(0): gevent runs timers only every 50 sleep(0) callbacks, seconds with this hog)."""
    while True:
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        gevent.sleep(0.001)


def main(seconds: float, busy_ms: float) -> None:
    """Print the guard's report and, to check its CPU figure, psutil's over the same span."""
    me = psutil.Process()
    cpu0, wall0 = me.cpu_times(), time.monotonic()
    guard = LoadGuard()
    guard.start()
    if busy_ms:
        gevent.spawn(hog, busy_ms / 1e3)
    gevent.sleep(seconds)
    report = guard.stop()
    cpu1, wall1 = me.cpu_times(), time.monotonic()
    used = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    print(json.dumps({"report": report.to_dict(), "psutil_cpu": used / (wall1 - wall0)}))


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
