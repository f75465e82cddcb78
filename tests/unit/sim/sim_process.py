"""Real simulator processes on loopback, and a small stdlib client to talk to them."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0


@dataclass
class Sim:
    """A running simulator process."""

    proc: subprocess.Popen[str]
    port: int
    stderr: Any

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self.connect()
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def post(self, path: str, body: Mapping[str, Any], **headers: str) -> tuple[int, Any]:
        status, _, data = self.request("POST", path, body, headers)
        return status, json.loads(data)

    def stream(self, path: str, body: Mapping[str, Any]) -> list[tuple[float, str]]:
        """Each non-empty SSE line with the monotonic time it was read."""
        conn = self.connect()
        try:
            conn.request("POST", path, body=json.dumps({**body, "stream": True}).encode())
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            lines: list[tuple[float, str]] = []
            for _ in range(100_000):
                raw = response.readline()
                if not raw:
                    break
                if raw.strip():
                    lines.append((time.monotonic(), raw.decode().rstrip("\n")))
            return lines
        finally:
            conn.close()

    def metrics_text(self) -> str:
        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        return data.decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return str(self.stderr.read())


def start_sim(*args: str, env: Mapping[str, str] | None = None) -> Sim:
    """Launch ``python -m harness.sim --port 0 ARGS`` and wait for its listening line."""
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed with the Sim
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.sim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=START_TIMEOUT_S):
            proc.kill()
            raise TimeoutError("the simulator did not say it was listening")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=STOP_TIMEOUT_S)
        stderr.seek(0)
        raise RuntimeError(f"the simulator exited: {stderr.read()}")
    event = json.loads(line)
    assert event["event"] == "listening"
    assert event["host"] == "127.0.0.1"
    return Sim(proc, int(event["port"]), stderr)


SimFactory = Callable[..., Sim]
