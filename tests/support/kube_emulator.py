"""A Kubernetes API emulator for the real `kubernetes` client: kmock's KubernetesEmulator
served by aiohttp on a free 127.0.0.1 port, in a thread of its own.

Nothing plays KServe's controller here: a test installs a stand-in (``on_patch``) that
updates ``status`` after each patch. kmock 0.8 limits: no schema validation, no
resourceVersion, patches are plain merges, and a write is applied before an injected error
answers it (``fail_next`` undoes it).

The test process runs under gevent (tests/conftest.py), whose threads are greenlets on the
main thread: the emulator's asyncio loop needs a real OS thread and real locks, taken from
gevent's originals.
"""

from __future__ import annotations

import asyncio
import json
import selectors
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
from gevent import monkey
from kubernetes import client

_start_thread: Any = monkey.get_original("_thread", "start_new_thread")
_lock: Any = monkey.get_original("_thread", "allocate_lock")
_Selector: Any = monkey.get_original("selectors", "EpollSelector") or selectors.DefaultSelector

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ISVC = "serving.kserve.io/v1beta1/inferenceservices"
CONFIGMAPS = "v1/configmaps"
DEPLOYMENTS = "apps/v1/deployments"


class KubeEmulator:
    """The emulator, its port, and safe access to its state from the test's thread."""

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.emu: kmock.KubernetesEmulator | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._ready = _lock()
        self._done = _lock()

    def __enter__(self) -> KubeEmulator:
        self._ready.acquire()
        self._done.acquire()
        _start_thread(self._main, ())
        if not self._ready.acquire(timeout=self.start_timeout_s):
            raise TimeoutError("the Kubernetes emulator did not start")
        if self._error is not None:
            raise RuntimeError("the Kubernetes emulator failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        if not self._done.acquire(timeout=10.0):
            raise TimeoutError("the Kubernetes emulator did not stop")

    def _main(self) -> None:
        try:
            self.loop = asyncio.SelectorEventLoop(_Selector())
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to the test's thread
            self._error = exc
        finally:
            if self.loop is not None:
                self.loop.close()
            if self._ready.locked():
                self._ready.release()
            self._done.release()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with (
            kmock.KubernetesEmulator() as emu,
            aiohttp.test_utils.RawTestServer(emu, host="127.0.0.1") as server,
        ):
            self.emu, self.port = emu, int(server.port or 0)
            self._ready.release()
            await self._stop.wait()

    def call(self, fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """fn() on the emulator's loop (its state is not thread-safe), and its result."""
        assert self.loop is not None
        done = _lock()
        done.acquire()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.release()

        self.loop.call_soon_threadsafe(run)
        if not done.acquire(timeout=timeout_s):
            raise TimeoutError("the emulator's loop did not run the call")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    @property
    def emulator(self) -> kmock.KubernetesEmulator:
        assert self.emu is not None
        return self.emu

    def api_client(self, token: str = "test-token") -> client.ApiClient:
        cfg = client.Configuration(
            host=f"http://127.0.0.1:{self.port}", api_key={"authorization": f"Bearer {token}"}
        )
        cfg.proxy = None  # the client reads HTTP(S)_PROXY from the environment otherwise
        return client.ApiClient(cfg)

    def write_kubeconfig(self, path: Path, token: str = "test-token") -> Path:
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "kmock", "user": {"token": token}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        }  # fmt: skip
        path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
        return path

    def seed(self, resource: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Put an object in place without a request (the request log stays empty)."""
        self.call(lambda: self.emulator.objects.__setitem__((resource, namespace, name), body))

    def object(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        raw = self.call(lambda: self.emulator.objects[resource, namespace, name].raw)
        assert isinstance(raw, dict)
        return raw

    def update(self, resource: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge into the stored object directly, as a controller writing status would."""
        self.call(lambda: self.emulator.objects[resource, namespace, name].patch(patch))

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every write the emulator received."""
        requests = self.call(lambda: list(self.emulator))
        return [(r.method.value, r.url.path) for r in requests if r.method.value in WRITES]

    def on_patch(
        self, fn: Callable[[dict[str, Any]], dict[str, Any] | None], resource: str = ISVC
    ) -> None:
        """After every patch of an InferenceService (or ``resource``; not its /status),
        fn(object) returns a merge into it (or None): a stand-in for a controller."""

        def install() -> None:
            emu = self.emulator

            def react(req: kmock.Request) -> dict[str, Any]:
                stored = emu.objects[_key(req)]
                change = fn(stored.raw)
                if change:
                    stored.patch(change)
                raw: dict[str, Any] = emu.objects[_key(req)].raw
                return raw

            emu["patch", kmock.resource(resource), kmock.subresource(None)] << react

        self.call(install)

    def fail_next(self, method: str, status: int, reason: str, count: int = 1) -> None:
        """Answer the next ``count`` requests of ``method`` on InferenceServices with an error
        Status, undoing the write the emulator applies before answering."""

        def install() -> None:
            emu = self.emulator
            view = emu[method, kmock.resource(ISVC)]
            seen = len(view)

            def answer(req: kmock.Request) -> dict[str, Any]:
                if method == "patch":
                    stored = emu.objects[_key(req)]
                    if len(stored.history) > 1:
                        del stored.history[-1]
                said = f"injected {status}"
                return {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "message": said, "reason": reason, "code": status}  # fmt: skip

            # ** 10: above the controller stand-in, which kmock would otherwise serve first
            view[seen : seen + count] ** 10 << status << answer

        self.call(install)


def _key(req: kmock.Request) -> tuple[Any, str | None, str]:
    """The stored object a request names."""
    assert req.resource is not None
    assert req.name is not None
    return req.resource, req.namespace, req.name
