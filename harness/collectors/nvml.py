"""NVML GPU sampler: per-GPU utilization, memory, power, energy, temperature, SM clock and
throttle reasons, read on a background thread at a fixed interval.

This module imports only the standard library, ``pynvml`` and ``harness.collectors.series``
so it runs on a GPU box that has nothing else (``docs/gpu-check/nvml_check.py`` relies on it).

A value NVML cannot give is never written as 0: an objective on it must come out
INCONCLUSIVE, not pass on a fake zero. So where there is no driver or no GPU the sampler says so
once (``unavailable``, ``info()["reason"]``) and records nothing, and a metric that raises an
``NVMLError`` on a GPU (``NotSupported`` for power on some boards) stops being read on that GPU
after its first message is kept in ``info()["errors"]``.

Series are ``gpu=<NVML index>``. NVML numbers GPUs in PCI bus order, which is not CUDA's
default order; ``info()["gpus"][i]["uuid"]`` is what joins the two.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.collectors.series import Point

SOURCE = "nvml"

# Bit -> name, the values of pynvml's nvmlClocksEventReason* (formerly ...ThrottleReason*).
THROTTLE_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}

# NVML return codes (pynvml's NVML_ERROR_*), compared by value so a stand-in module works too.
_ERR_DRIVER_NOT_LOADED = 9
_ERR_LIBRARY_NOT_FOUND = 12
_ERR_FUNCTION_NOT_FOUND = 13
_ERR_GPU_IS_LOST = 15

_log = logging.getLogger(__name__)


def decode_throttle(mask: int) -> list[str]:
    """Names of the bits set in a clocks-event (throttle) mask, lowest bit first; a bit this
    table does not know reads ``unknown_0x...`` rather than being dropped."""
    names: list[str] = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(THROTTLE_REASONS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


def cuda_version_text(version: int) -> str:
    """NVML's CUDA driver version integer as people write it: 12040 -> "12.4"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def energy_joules(points: Iterable[Point]) -> dict[str, float]:
    """Energy used per series over the points given: last minus first ``gpu.energy`` reading
    (the counter is cumulative since the driver loaded). A series with fewer than two readings
    is left out, not reported as 0 J."""
    first: dict[str, Point] = {}
    last: dict[str, Point] = {}
    for p in points:
        if p.metric != "gpu.energy":
            continue
        if p.series not in first or p.wall < first[p.series].wall:
            first[p.series] = p
        if p.series not in last or p.wall >= last[p.series].wall:
            last[p.series] = p
    return {s: last[s].value - first[s].value for s in first if last[s] is not first[s]}


def next_tick(t0: float, interval_s: float, now: float, k: int) -> int:
    """Index of the next tick after tick ``k`` on the absolute schedule ``t0 + k * interval``:
    ``k + 1`` when on time; when a sample ran late, the first tick still in the future, so
    missed ticks are skipped instead of bunched up and the schedule never drifts."""
    return max(k + 1, math.floor((now - t0) / interval_s) + 1)


def _text(value: Any) -> str:
    """pynvml before 11.5 returns ``bytes`` for strings, later versions ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # NVMLError.__str__ may call into NVML for an unknown code
        text = ""
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


@dataclass
class _Gpu:
    index: int
    handle: Any
    lost: bool = False
    disabled: set[str] = field(default_factory=set)
    throttle_seen: int = 0
    throttle_read: bool = False


def _pynvml() -> Any:
    """The pynvml module, or None where it is missing; imported when a sampler is made, not with
    this module (the harness imports it before its load only for the agent's names)."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency; said once by start()
        return None
    return pynvml


class NvmlSampler:
    """Samples every GPU (or ``devices``, NVML indices) each ``interval_s`` on a daemon thread.

    Each tick's points go to ``sink`` in one batch; with no sink they are kept in ``points``.
    ``nvml`` stands in for the ``pynvml`` module in tests; ``clock`` stamps ``Point.wall``.
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        devices: Sequence[int] | None = None,
        sink: Callable[[list[Point]], None] | None = None,
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.devices = None if devices is None else list(devices)
        self.points: list[Point] = []
        self._sink = sink if sink is not None else self.points.extend
        self._nvml: Any = nvml if nvml is not None else _pynvml()
        self._clock = clock
        self.unavailable: str | None = None
        self.ticks = 0
        self.skipped_ticks = 0
        self.point_count = 0
        self._available = False
        self._started = False
        self._stopped = False
        self._gpus: list[_Gpu] = []
        self._static: list[dict[str, Any]] = []
        self._driver: str | None = None
        self._cuda: str | None = None
        self._nvml_version: str | None = None
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._readers: list[tuple[tuple[str, ...], Callable[[Any, _Gpu], tuple[float, ...]]]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Initialise NVML, read the static facts, take the first sample and start the thread.

        False (with ``unavailable`` set and logged once) when NVML cannot start, sees no GPU or
        lacks a requested index; NVML errors never escape. A second call changes nothing.
        """
        if self._started:
            return self._available
        self._started = True
        reason = self._open()
        if reason is not None:
            self.unavailable = f"{reason}: GPU metrics not collected"
            _log.warning("%s", self.unavailable)
            return False
        self._available = True
        self._readers = self._make_readers()
        t0 = time.monotonic()
        self._tick()
        self._thread = threading.Thread(
            target=self._run, args=(t0,), name="nvml-sampler", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the thread, take one last sample (so the run's end is covered), shut NVML down.

        Safe to call twice, before ``start`` or after a failed one.
        """
        if self._stopped or not self._available:
            return
        self._stopped = True
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(5.0, 2 * self.interval_s))
            if thread.is_alive():  # an NVML call hangs (a sick GPU): don't call NVML under it
                with self._lock:
                    self._errors.setdefault(
                        "sampler", "sampler thread did not stop; no final sample taken"
                    )
                return
        self._tick()
        self._shutdown_quietly()

    def info(self) -> dict[str, Any]:
        """What the run manifest records: availability and why not, driver, CUDA and NVML
        versions, the GPUs, first error per metric and the throttle reasons seen per GPU."""
        with self._lock:
            return {
                "available": self._available,
                "reason": self.unavailable,
                "driver": self._driver,
                "cuda_driver_version": self._cuda,
                "nvml_version": self._nvml_version,
                "gpus": [dict(g) for g in self._static],
                "errors": dict(self._errors),
                "throttle_reasons_seen": {
                    g.index: decode_throttle(g.throttle_seen) for g in self._gpus if g.throttle_read
                },
            }

    # -- start-up ----------------------------------------------------------------------------

    def _open(self) -> str | None:
        """Bring NVML up and pick the GPUs; the reason it could not, or None."""
        nv = self._nvml
        if nv is None:
            return "pynvml (nvidia-ml-py) not installed"
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            code = getattr(e, "value", None)
            if code == _ERR_LIBRARY_NOT_FOUND:
                return "no NVIDIA driver (NVML library not found)"
            if code == _ERR_DRIVER_NOT_LOADED:
                return "NVIDIA driver not loaded"
            return f"NVML failed to initialise: {_message(e)}"
        reason = self._pick_devices()
        if reason is not None:
            self._shutdown_quietly()
            return reason
        self._read_static()
        return None

    def _pick_devices(self) -> str | None:
        nv = self._nvml
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as e:
            return f"NVML could not count GPUs: {_message(e)}"
        if count == 0:
            return "no NVIDIA GPU found (NVML sees 0 devices)"
        wanted = list(range(count)) if self.devices is None else self.devices
        missing = [i for i in wanted if not 0 <= i < count]
        if missing:
            return f"GPU index {missing} requested but NVML sees {count} device(s)"
        for i in wanted:
            try:
                self._gpus.append(_Gpu(i, nv.nvmlDeviceGetHandleByIndex(i)))
            except nv.NVMLError as e:
                self._errors.setdefault(f"gpu={i}", f"no handle: {_message(e)}")
        if not self._gpus:
            failed = "; ".join(f"{k} {v}" for k, v in self._errors.items())
            return f"no usable GPU (NVML gave no handle: {failed})"
        return None

    def _read_static(self) -> None:
        nv = self._nvml
        self._driver = self._static_call("driver", lambda: _text(nv.nvmlSystemGetDriverVersion()))
        self._cuda = self._static_call("cuda_driver_version", self._cuda_version)
        self._nvml_version = self._static_call(
            "nvml_version", lambda: _text(nv.nvmlSystemGetNVMLVersion())
        )
        for g in self._gpus:
            self._static.append(
                {
                    "index": g.index,
                    "name": self._device_call("gpu.name", g, nv.nvmlDeviceGetName, _text),
                    "uuid": self._device_call("gpu.uuid", g, nv.nvmlDeviceGetUUID, _text),
                    "memory_total_bytes": self._device_call(
                        "gpu.memory_total", g, nv.nvmlDeviceGetMemoryInfo, lambda m: int(m.total)
                    ),
                    "power_limit_w": self._device_call(
                        "gpu.power_limit",
                        g,
                        nv.nvmlDeviceGetEnforcedPowerLimit,
                        lambda mw: mw / 1000.0,
                    ),
                }
            )

    def _device_call(
        self, key: str, g: _Gpu, call: Callable[[Any], Any], convert: Callable[[Any], Any]
    ) -> Any:
        return self._static_call(key, lambda: convert(call(g.handle)), g.index)

    def _cuda_version(self) -> str:
        nv = self._nvml
        if hasattr(nv, "nvmlSystemGetCudaDriverVersion_v2"):
            try:
                return cuda_version_text(int(nv.nvmlSystemGetCudaDriverVersion_v2()))
            except nv.NVMLError as e:
                if getattr(e, "value", None) != _ERR_FUNCTION_NOT_FOUND:
                    raise
        return cuda_version_text(int(nv.nvmlSystemGetCudaDriverVersion()))

    def _static_call(self, key: str, read: Callable[[], Any], index: int | None = None) -> Any:
        """One static fact, or None with its first error kept (never a made-up value)."""
        try:
            return read()
        except self._nvml.NVMLError as e:
            where = "" if index is None else f"gpu={index}: "
            self._errors.setdefault(key, where + _message(e))
            return None

    def _shutdown_quietly(self) -> None:
        with contextlib.suppress(Exception):  # nothing to do about a failed shutdown
            self._nvml.nvmlShutdown()

    # -- sampling ----------------------------------------------------------------------------

    def _run(self, t0: float) -> None:
        k = 0
        while True:
            k_next = next_tick(t0, self.interval_s, time.monotonic(), k)
            self.skipped_ticks += k_next - k - 1
            k = k_next
            if self._stop_event.wait(max(0.0, t0 + k * self.interval_s - time.monotonic())):
                return
            self._tick()

    def _tick(self) -> None:
        """One sample of every GPU still sampled, handed to the sink as one batch."""
        with self._lock:
            points: list[Point] = []
            for g in self._gpus:
                if not g.lost:
                    points.extend(self._sample_gpu(g))
            self.ticks += 1
            self.point_count += len(points)
        if points:
            try:
                self._sink(points)
            except Exception as e:  # a failing sink must not kill sampling
                with self._lock:
                    self._errors.setdefault("sink", _message(e))

    def _sample_gpu(self, g: _Gpu) -> list[Point]:
        nv = self._nvml
        h = g.handle
        series = f"gpu={g.index}"
        wall = self._clock()
        out: list[Point] = []
        for metrics, read in self._readers:
            if metrics[0] in g.disabled:
                continue
            try:
                values = read(h, g)
            except Exception as e:
                if isinstance(e, nv.NVMLError) and getattr(e, "value", None) == _ERR_GPU_IS_LOST:
                    g.lost = True
                    self._errors.setdefault(series, f"{_message(e)}: sampling stopped")
                    return out
                g.disabled.add(metrics[0])
                for m in metrics:
                    self._errors.setdefault(m, f"{series}: {_message(e)}")
                continue
            out.extend(
                Point(SOURCE, m, series, wall, float(v))
                for m, v in zip(metrics, values, strict=True)
            )
        return out

    def _make_readers(
        self,
    ) -> list[tuple[tuple[str, ...], Callable[[Any, _Gpu], tuple[float, ...]]]]:
        """(metrics one NVML call yields, in base units; the call). A failing call disables
        all its metrics on that GPU."""
        nv = self._nvml
        temp_sensor = getattr(nv, "NVML_TEMPERATURE_GPU", 0)
        sm_clock = getattr(nv, "NVML_CLOCK_SM", 1)

        def utilization(h: Any, g: _Gpu) -> tuple[float, ...]:
            u = nv.nvmlDeviceGetUtilizationRates(h)
            return u.gpu / 100.0, u.memory / 100.0

        def memory(h: Any, g: _Gpu) -> tuple[float, ...]:
            m = nv.nvmlDeviceGetMemoryInfo(h)
            return float(m.used), float(m.total)

        return [
            (("gpu.utilization", "gpu.memory_utilization"), utilization),
            (("gpu.memory_used", "gpu.memory_total"), memory),
            (("gpu.power",), lambda h, g: (nv.nvmlDeviceGetPowerUsage(h) / 1000.0,)),
            (("gpu.energy",), lambda h, g: (nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0,)),
            (("gpu.temperature",), lambda h, g: (nv.nvmlDeviceGetTemperature(h, temp_sensor),)),
            (("gpu.sm_clock",), lambda h, g: (nv.nvmlDeviceGetClockInfo(h, sm_clock) * 1e6,)),
            (("gpu.throttle_reasons",), self._throttle),
        ]

    def _throttle(self, h: Any, g: _Gpu) -> tuple[float, ...]:
        """The clocks-event mask; the ``...ThrottleReasons`` name where the newer call is absent
        from pynvml or from the driver."""
        nv = self._nvml
        mask: int | None = None
        if hasattr(nv, "nvmlDeviceGetCurrentClocksEventReasons"):
            try:
                mask = int(nv.nvmlDeviceGetCurrentClocksEventReasons(h))
            except nv.NVMLError as e:
                if getattr(e, "value", None) != _ERR_FUNCTION_NOT_FOUND:
                    raise
        if mask is None:
            mask = int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))
        g.throttle_seen |= mask
        g.throttle_read = True
        return (float(mask),)
