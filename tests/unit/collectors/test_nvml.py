"""The NVML sampler against a fake pynvml that raises the real ``pynvml.NVMLError`` classes, so
the sampler's except clauses are the ones a real driver exercises."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from harness.collectors.nvml import (
    THROTTLE_REASONS,
    NvmlSampler,
    cuda_version_text,
    decode_throttle,
    energy_joules,
    next_tick,
)
from harness.collectors.series import Point

GIB = 1024**3


def nvml_error(code: int) -> Exception:
    err: Exception = pynvml.NVMLError(code)
    return err


@dataclass
class FakeGpu:
    name: str | bytes = "NVIDIA H100 80GB HBM3"
    uuid: str | bytes = "GPU-0000"
    total: int = 80 * GIB
    used: int = 10 * GIB
    util_gpu: int = 97
    util_mem: int = 41
    power_mw: int = 612_500
    energy_mj: int = 1_000_000
    energy_step_mj: int = 1_500
    temp_c: int = 66
    sm_mhz: int = 1980
    throttle: int = 0x4 | 0x20
    power_limit_mw: int = 700_000
    errors: dict[str, Exception] = field(default_factory=dict)
    lost_after_reads: int | None = None  # utilization reads before every call says GpuIsLost
    reads: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    """The few pynvml functions the sampler calls; ``errors`` (per GPU or ``system``) maps a
    function name to the exception it raises."""

    def __init__(self, gpus: list[FakeGpu], **system: Any) -> None:
        self.gpus = gpus
        self.init_error: Exception | None = system.pop("init_error", None)
        self.count_error: Exception | None = system.pop("count_error", None)
        self.system_errors: dict[str, Exception] = system.pop("errors", {})
        self.driver: str | bytes = system.pop("driver", "550.54.15")
        self.nvml_version: str | bytes = system.pop("nvml_version", "12.550.54.15")
        self.cuda: int = system.pop("cuda", 12040)
        assert not system
        self.calls: list[str] = []

    def module(self, drop: tuple[str, ...] = ()) -> SimpleNamespace:
        """Like the pynvml module: the functions, the constants and the NVMLError classes."""
        names = [n for n in dir(self) if n.startswith("nvml") and n not in drop]
        ns = SimpleNamespace(**{n: getattr(self, n) for n in names})
        ns.NVMLError = pynvml.NVMLError
        ns.NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
        ns.NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
        return ns

    def _system(self, fn: str) -> None:
        self.calls.append(fn)
        if fn in self.system_errors:
            raise self.system_errors[fn]

    def _device(self, fn: str, h: FakeGpu) -> FakeGpu:
        self.calls.append(fn)
        h.reads[fn] = h.reads.get(fn, 0) + 1
        lost = h.lost_after_reads
        if lost is not None and h.reads.get("nvmlDeviceGetUtilizationRates", 0) > lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in h.errors:
            raise h.errors[fn]
        return h

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self._system("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self.calls.append("nvmlDeviceGetCount")
        if self.count_error is not None:
            raise self.count_error
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        self._system("nvmlDeviceGetHandleByIndex")
        return self.gpus[i]

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        self._system("nvmlSystemGetNVMLVersion")
        return self.nvml_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def nvmlDeviceGetName(self, h: FakeGpu) -> str | bytes:
        return self._device("nvmlDeviceGetName", h).name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str | bytes:
        return self._device("nvmlDeviceGetUUID", h).uuid

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", h).power_limit_mw

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> SimpleNamespace:
        g = self._device("nvmlDeviceGetMemoryInfo", h)
        return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> SimpleNamespace:
        g = self._device("nvmlDeviceGetUtilizationRates", h)
        return SimpleNamespace(gpu=g.util_gpu, memory=g.util_mem)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return self._device("nvmlDeviceGetPowerUsage", h).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        g = self._device("nvmlDeviceGetTotalEnergyConsumption", h)
        g.energy_mj += g.energy_step_mj
        return g.energy_mj

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperature", h).temp_c

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock: int) -> int:
        assert clock == pynvml.NVML_CLOCK_SM
        return self._device("nvmlDeviceGetClockInfo", h).sm_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        return self._device("nvmlDeviceGetCurrentClocksEventReasons", h).throttle

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeGpu) -> int:
        return self._device("nvmlDeviceGetCurrentClocksThrottleReasons", h).throttle


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[Point]] = []

    def __call__(self, points: list[Point]) -> None:
        self.batches.append(points)

    def values(self, batch: int, series: str) -> dict[str, float]:
        return {p.metric: p.value for p in self.batches[batch] if p.series == series}

    def all(self) -> list[Point]:
        return [p for b in self.batches for p in b]


def fake_clock() -> Any:
    return itertools.count(1000.0, 1.0).__next__


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(),
        FakeGpu(
            name="NVIDIA A10G",
            uuid="GPU-0001",
            total=24 * GIB,
            used=GIB,
            util_gpu=0,
            util_mem=0,
            power_mw=21_000,
            energy_mj=5_000,
            energy_step_mj=250,
            temp_c=31,
            sm_mhz=210,
            throttle=0x1,
            power_limit_mw=300_000,
        ),
    ]


def run_once(fake: FakeNvml, **kw: Any) -> tuple[NvmlSampler, Batches]:
    """start + stop with an interval long enough that only the first and final samples run."""
    sink = Batches()
    s = NvmlSampler(interval_s=60.0, sink=sink, nvml=fake.module(), clock=fake_clock(), **kw)
    assert s.start()
    s.stop()
    return s, sink


ALL_METRICS = {
    "gpu.utilization",
    "gpu.memory_utilization",
    "gpu.memory_used",
    "gpu.memory_total",
    "gpu.power",
    "gpu.energy",
    "gpu.temperature",
    "gpu.sm_clock",
    "gpu.throttle_reasons",
}


def test_two_gpus_exact_values_and_manifest() -> None:
    fake = FakeNvml(two_gpus())
    s, sink = run_once(fake)

    assert s.ticks == 2
    assert len(sink.batches) == 2  # first sample at start, final one at stop
    assert s.point_count == 2 * 2 * len(ALL_METRICS)
    assert sink.values(0, "gpu=0") == {
        "gpu.utilization": 0.97,
        "gpu.memory_utilization": 0.41,
        "gpu.memory_used": float(10 * GIB),
        "gpu.memory_total": float(80 * GIB),
        "gpu.power": 612.5,
        "gpu.energy": 1001.5,
        "gpu.temperature": 66.0,
        "gpu.sm_clock": 1.98e9,
        "gpu.throttle_reasons": float(0x24),
    }
    assert sink.values(1, "gpu=1")["gpu.power"] == 21.0
    assert sink.values(1, "gpu=1")["gpu.utilization"] == 0.0  # a real 0 is kept
    assert {p.source for p in sink.all()} == {"nvml"}
    assert [p.wall for p in sink.batches[0]] == [1000.0] * 9 + [1001.0] * 9
    assert energy_joules(sink.all()) == pytest.approx({"gpu=0": 1.5, "gpu=1": 0.25})

    assert s.info() == {
        "available": True,
        "reason": None,
        "driver": "550.54.15",
        "cuda_driver_version": "12.4",
        "nvml_version": "12.550.54.15",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-0000",
                "memory_total_bytes": 80 * GIB,
                "power_limit_w": 700.0,
            },
            {
                "index": 1,
                "name": "NVIDIA A10G",
                "uuid": "GPU-0001",
                "memory_total_bytes": 24 * GIB,
                "power_limit_w": 300.0,
            },
        ],
        "errors": {},
        "throttle_reasons_seen": {0: ["sw_power_cap", "sw_thermal_slowdown"], 1: ["gpu_idle"]},
    }
    assert fake.calls.count("nvmlInit") == 1
    assert fake.calls.count("nvmlShutdown") == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver (NVML library not found)"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
        (
            pynvml.NVML_ERROR_NO_PERMISSION,
            "NVML failed to initialise: Insufficient Permissions (NVMLError_NoPermission)",
        ),
    ],
)
def test_init_failure_says_so_once_and_records_nothing(
    code: int, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNvml(two_gpus(), init_error=nvml_error(code))
    sink = Batches()
    s = NvmlSampler(interval_s=0.01, sink=sink, nvml=fake.module())
    with caplog.at_level(logging.WARNING, logger="harness.collectors.nvml"):
        assert s.start() is False
        assert s.start() is False
        s.stop()
        s.stop()
    assert s.unavailable == f"{expected}: GPU metrics not collected"
    assert [r.getMessage() for r in caplog.records] == [s.unavailable]
    assert sink.batches == []
    assert s.ticks == 0
    info = s.info()
    assert info["available"] is False
    assert info["reason"] == s.unavailable
    assert info["gpus"] == []
    assert info["driver"] is None
    assert fake.calls == ["nvmlInit"]  # nothing sampled, no shutdown of what never started


def test_no_devices() -> None:
    fake = FakeNvml([])
    s = NvmlSampler(nvml=fake.module())
    assert s.start() is False
    assert s.unavailable == "no NVIDIA GPU found (NVML sees 0 devices): GPU metrics not collected"
    assert fake.calls == ["nvmlInit", "nvmlDeviceGetCount", "nvmlShutdown"]
    assert s.points == []


def test_count_error() -> None:
    fake = FakeNvml(two_gpus(), count_error=nvml_error(pynvml.NVML_ERROR_UNKNOWN))
    s = NvmlSampler(nvml=fake.module())
    assert s.start() is False
    assert s.unavailable is not None
    assert "NVML could not count GPUs: Unknown Error" in s.unavailable


def test_requested_index_missing() -> None:
    s = NvmlSampler(devices=[0, 5], nvml=FakeNvml(two_gpus()).module())
    assert s.start() is False
    assert s.unavailable == (
        "GPU index [5] requested but NVML sees 2 device(s): GPU metrics not collected"
    )


def test_requested_subset_and_default_sink() -> None:
    s = NvmlSampler(interval_s=60.0, devices=[1], nvml=FakeNvml(two_gpus()).module())
    assert s.start()
    s.stop()
    assert {p.series for p in s.points} == {"gpu=1"}
    assert len(s.points) == 2 * len(ALL_METRICS)
    assert [g["index"] for g in s.info()["gpus"]] == [1]


def test_handle_failure_drops_only_that_gpu() -> None:
    fake = FakeNvml(two_gpus())
    real = fake.nvmlDeviceGetHandleByIndex

    def handle(i: int) -> FakeGpu:
        if i == 0:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        return real(i)

    ns = fake.module()
    ns.nvmlDeviceGetHandleByIndex = handle
    s = NvmlSampler(interval_s=60.0, nvml=ns)
    assert s.start()
    s.stop()
    assert {p.series for p in s.points} == {"gpu=1"}
    assert "Insufficient Permissions" in s.info()["errors"]["gpu=0"]


def test_no_handle_at_all() -> None:
    ns = FakeNvml(two_gpus()).module()

    def handle(i: int) -> FakeGpu:
        raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    ns.nvmlDeviceGetHandleByIndex = handle
    s = NvmlSampler(nvml=ns)
    assert s.start() is False
    assert s.unavailable is not None
    assert s.unavailable.startswith("no usable GPU (NVML gave no handle: gpu=0 ")
    assert s.info()["available"] is False


READERS = [
    ("nvmlDeviceGetUtilizationRates", {"gpu.utilization", "gpu.memory_utilization"}),
    ("nvmlDeviceGetMemoryInfo", {"gpu.memory_used", "gpu.memory_total"}),
    ("nvmlDeviceGetPowerUsage", {"gpu.power"}),
    ("nvmlDeviceGetTotalEnergyConsumption", {"gpu.energy"}),
    ("nvmlDeviceGetTemperature", {"gpu.temperature"}),
    ("nvmlDeviceGetClockInfo", {"gpu.sm_clock"}),
    ("nvmlDeviceGetCurrentClocksEventReasons", {"gpu.throttle_reasons"}),
]
ERROR_CODES = [
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_UNKNOWN,
    pynvml.NVML_ERROR_TIMEOUT,
]


@pytest.mark.parametrize(("fn", "metrics"), READERS)
@pytest.mark.parametrize("code", ERROR_CODES)
def test_metric_error_disables_metric_on_that_gpu_never_zero(
    fn: str, metrics: set[str], code: int
) -> None:
    gpus = two_gpus()
    gpus[0].errors[fn] = nvml_error(code)
    s, sink = run_once(FakeNvml(gpus))

    for batch in range(2):
        assert set(sink.values(batch, "gpu=0")) == ALL_METRICS - metrics
        assert set(sink.values(batch, "gpu=1")) == ALL_METRICS
    assert gpus[0].reads[fn] == 1 + (fn == "nvmlDeviceGetMemoryInfo")  # + the static read
    errors = s.info()["errors"]
    text = str(nvml_error(code))
    for m in metrics:
        assert errors[m].startswith(f"gpu=0: {text}"), errors
    assert set(errors) <= metrics | {"gpu.memory_total"}
    if fn == "nvmlDeviceGetMemoryInfo":
        assert s.info()["gpus"][0]["memory_total_bytes"] is None
    if fn == "nvmlDeviceGetCurrentClocksEventReasons":
        assert 0 not in s.info()["throttle_reasons_seen"]  # unknown, not "none seen"


def test_non_nvml_exception_also_disables_metric() -> None:
    gpus = two_gpus()
    gpus[0].errors["nvmlDeviceGetPowerUsage"] = RuntimeError("boom")
    s, sink = run_once(FakeNvml(gpus))
    assert "gpu.power" not in sink.values(1, "gpu=0")
    assert s.info()["errors"]["gpu.power"] == "gpu=0: boom (RuntimeError)"


def test_missing_function_in_old_pynvml_disables_metric() -> None:
    ns = FakeNvml(two_gpus()).module(drop=("nvmlDeviceGetTotalEnergyConsumption",))
    s = NvmlSampler(interval_s=60.0, nvml=ns)
    assert s.start()
    s.stop()
    assert "gpu.energy" not in {p.metric for p in s.points}
    assert "AttributeError" in s.info()["errors"]["gpu.energy"]


def test_gpu_lost_mid_run() -> None:
    gpus = two_gpus()
    gpus[1].lost_after_reads = 1  # the first sample reads it; from the final one on it is lost
    s, sink = run_once(FakeNvml(gpus))
    assert set(sink.values(0, "gpu=1")) == ALL_METRICS
    assert sink.values(1, "gpu=1") == {}
    assert set(sink.values(1, "gpu=0")) == ALL_METRICS
    assert s.info()["errors"] == {"gpu=1": "GPU is lost (NVMLError_GpuIsLost): sampling stopped"}


def test_gpu_lost_stops_sampling_it() -> None:
    gpus = two_gpus()
    gpus[1].lost_after_reads = 0
    fake = FakeNvml(gpus)
    sink = Batches()
    s = NvmlSampler(interval_s=0.005, sink=sink, nvml=fake.module(), clock=fake_clock())
    assert s.start()
    deadline = time.monotonic() + 2.0
    while s.ticks < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    s.stop()
    assert s.ticks >= 4
    assert gpus[1].reads["nvmlDeviceGetUtilizationRates"] == 1  # not retried after the loss
    assert {p.series for p in sink.all()} == {"gpu=0"}


def test_bytes_from_old_pynvml() -> None:
    gpus = [FakeGpu(name=b"Tesla V100-SXM2-16GB", uuid=b"GPU-abc")]
    fake = FakeNvml(gpus, driver=b"470.82.01", nvml_version=b"11.470.82.01", cuda=11040)
    s, _ = run_once(fake)
    info = s.info()
    assert info["driver"] == "470.82.01"
    assert info["nvml_version"] == "11.470.82.01"
    assert info["cuda_driver_version"] == "11.4"
    assert info["gpus"][0]["name"] == "Tesla V100-SXM2-16GB"
    assert info["gpus"][0]["uuid"] == "GPU-abc"


def test_static_errors_are_none_and_listed() -> None:
    gpus = two_gpus()
    gpus[1].errors["nvmlDeviceGetEnforcedPowerLimit"] = nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    gpus[1].errors["nvmlDeviceGetName"] = nvml_error(pynvml.NVML_ERROR_UNKNOWN)
    fake = FakeNvml(
        gpus,
        errors={
            "nvmlSystemGetDriverVersion": nvml_error(pynvml.NVML_ERROR_UNKNOWN),
            "nvmlSystemGetNVMLVersion": nvml_error(pynvml.NVML_ERROR_UNKNOWN),
            "nvmlSystemGetCudaDriverVersion_v2": nvml_error(pynvml.NVML_ERROR_NO_PERMISSION),
        },
    )
    s, sink = run_once(fake)
    info = s.info()
    assert info["driver"] is None
    assert info["nvml_version"] is None
    assert info["cuda_driver_version"] is None
    assert info["gpus"][1]["power_limit_w"] is None
    assert info["gpus"][1]["name"] is None
    assert info["errors"]["gpu.power_limit"] == "gpu=1: Not Supported (NVMLError_NotSupported)"
    assert info["errors"]["gpu.name"].startswith("gpu=1: Unknown Error")
    assert info["errors"]["driver"] == "Unknown Error (NVMLError_Unknown)"
    assert info["errors"]["cuda_driver_version"].startswith("Insufficient Permissions")
    assert set(sink.values(1, "gpu=1")) == ALL_METRICS  # sampling is unaffected


def test_cuda_version_falls_back_to_v1() -> None:
    fake = FakeNvml(two_gpus(), cuda=11080)
    fake.system_errors["nvmlSystemGetCudaDriverVersion_v2"] = nvml_error(
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    )
    s, _ = run_once(fake)
    assert s.info()["cuda_driver_version"] == "11.8"

    fake = FakeNvml(two_gpus(), cuda=12020)
    s = NvmlSampler(interval_s=60.0, nvml=fake.module(drop=("nvmlSystemGetCudaDriverVersion_v2",)))
    assert s.start()
    s.stop()
    assert s.info()["cuda_driver_version"] == "12.2"
    assert cuda_version_text(12090) == "12.9"


def test_throttle_decoding() -> None:
    assert decode_throttle(0) == []
    assert decode_throttle(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert decode_throttle(0x1000 | 0x100) == ["display_clock_setting", "unknown_0x1000"]
    assert {
        pynvml.nvmlClocksEventReasonGpuIdle: "gpu_idle",
        pynvml.nvmlClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSyncBoost: "sync_boost",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
        pynvml.nvmlClocksEventReasonDisplayClockSetting: "display_clock_setting",
        pynvml.nvmlClocksThrottleReasonBoardLimit: "board_limit",
        pynvml.nvmlClocksThrottleReasonReliability: "reliability",
    } == THROTTLE_REASONS


def test_throttle_seen_accumulates_across_ticks() -> None:
    gpus = two_gpus()
    fake = FakeNvml(gpus)
    s = NvmlSampler(interval_s=60.0, nvml=fake.module())
    assert s.start()
    gpus[0].throttle = 0x8  # changes between the first and the final sample
    s.stop()
    assert s.info()["throttle_reasons_seen"][0] == [
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
    ]


@pytest.mark.parametrize("how", ["absent from pynvml", "absent from the driver"])
def test_throttle_falls_back_to_old_name(how: str) -> None:
    fake = FakeNvml(two_gpus())
    if how == "absent from pynvml":
        ns = fake.module(drop=("nvmlDeviceGetCurrentClocksEventReasons",))
    else:
        for g in fake.gpus:
            g.errors["nvmlDeviceGetCurrentClocksEventReasons"] = nvml_error(
                pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
            )
        ns = fake.module()
    s = NvmlSampler(interval_s=60.0, nvml=ns)
    assert s.start()
    s.stop()
    assert fake.calls.count("nvmlDeviceGetCurrentClocksThrottleReasons") == 4
    assert s.info()["errors"] == {}
    assert [p.value for p in s.points if p.metric == "gpu.throttle_reasons"] == [36.0, 1.0] * 2


def test_stop_is_idempotent_and_takes_final_sample() -> None:
    fake = FakeNvml(two_gpus())
    sink = Batches()
    s = NvmlSampler(interval_s=60.0, sink=sink, nvml=fake.module())
    s.stop()  # before start: nothing
    assert fake.calls == []
    assert s.start()
    assert s.ticks == 1  # the first sample is taken by start()
    s.stop()
    s.stop()
    assert s.ticks == 2
    assert len(sink.batches) == 2
    assert fake.calls.count("nvmlShutdown") == 1
    assert s.start() is True  # a second start changes nothing
    assert fake.calls.count("nvmlInit") == 1


def test_shutdown_error_ignored() -> None:
    fake = FakeNvml(two_gpus(), errors={"nvmlShutdown": nvml_error(pynvml.NVML_ERROR_UNKNOWN)})
    s, _ = run_once(fake)
    assert s.ticks == 2


def test_failing_sink_does_not_stop_sampling() -> None:
    calls: list[int] = []

    def sink(points: list[Point]) -> None:
        calls.append(len(points))
        raise OSError("disk full")

    s = NvmlSampler(interval_s=60.0, sink=sink, nvml=FakeNvml(two_gpus()).module())
    assert s.start()
    s.stop()
    assert calls == [18, 18]
    assert s.info()["errors"] == {"sink": "disk full (OSError)"}


def test_stop_is_prompt_with_a_long_interval() -> None:
    before = set(threading.enumerate())
    s = NvmlSampler(interval_s=30.0, nvml=FakeNvml(two_gpus()).module())
    assert s.start()
    (thread,) = set(threading.enumerate()) - before
    assert thread.daemon
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 1.0
    assert not thread.is_alive()


def test_interval_sampling_on_a_thread() -> None:
    sink = Batches()
    interval = 0.01
    s = NvmlSampler(
        interval_s=interval, sink=sink, nvml=FakeNvml(two_gpus()).module(), clock=time.monotonic
    )
    t0 = time.monotonic()
    assert s.start()
    deadline = t0 + 2.0
    while s.ticks < 6 and time.monotonic() < deadline:
        time.sleep(interval / 2)
    s.stop()
    assert s.ticks >= 7  # >= 6 on the schedule and the final one
    walls = [b[0].wall for b in sink.batches]
    assert walls == sorted(walls)
    # the absolute schedule never samples early: tick k is at or after t0 + k * interval
    for i, w in enumerate(walls[:-1]):
        assert w >= t0 + i * interval - 1e-4


def test_next_tick_absolute_schedule() -> None:
    assert next_tick(t0=100.0, interval_s=1.0, now=101.2, k=1) == 2  # on time
    assert next_tick(t0=100.0, interval_s=1.0, now=100.0, k=0) == 1
    assert next_tick(t0=100.0, interval_s=1.0, now=103.5, k=1) == 4  # late: 2 and 3 skipped
    assert next_tick(t0=100.0, interval_s=0.5, now=100.1, k=3) == 4  # never goes back


def test_energy_joules() -> None:
    pts = [
        Point("nvml", "gpu.energy", "gpu=0", 2.0, 130.0),
        Point("nvml", "gpu.energy", "gpu=0", 1.0, 100.0),
        Point("nvml", "gpu.power", "gpu=0", 3.0, 999.0),
        Point("nvml", "gpu.energy", "gpu=0", 3.0, 160.5),
        Point("nvml", "gpu.energy", "gpu=1", 1.0, 7.0),  # one reading: no delta, not 0 J
    ]
    assert energy_joules(pts) == {"gpu=0": 60.5}


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        NvmlSampler(interval_s=0)
