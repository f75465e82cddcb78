"""The kserve launcher: an existing InferenceService runs each setting in turn, through the
gate's hold on the cluster (harness.gate.cluster).

Each setting is a merge patch of the predictor's args and env (flags.isvc_patch), computed
from the service as first read, so a setting never inherits the flags of the one before. In
Serverless mode (the default) the setting is in effect once a new revision is the latest
ready one with all the traffic; in RawDeployment mode there are no revisions, so it is in
effect once KServe has observed the patched generation (where it reports
``status.observedGeneration``) and the service is Ready. ``restore`` puts the args and env the
service had before back.

Without ``apply`` nothing is written: ``start`` announces the patch and returns a
``Launched`` with an empty url (nothing to measure).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.gate.cluster import Cluster, ClusterError
from harness.gate.kserve import ServiceState
from harness.spec.launcher import KServeLauncherSpec
from harness.tune.contract import Launched, LaunchFailed
from harness.tune.flags import isvc_patch, isvc_restore_patch, serve_command

#: The path KServe's Hugging Face / vLLM runtime serves the OpenAI API under.
OPENAI_PATH = "/openai/v1"
DRY_RUN_NOTE = "dry run: nothing applied (with --apply the InferenceService is patched)"


class KServeLauncher:
    """Patches one InferenceService per setting and waits for it to roll out."""

    kind = "kserve"

    def __init__(
        self,
        spec: KServeLauncherSpec,
        cluster: Cluster,
        announce: Callable[[str], None],
        poll_s: float = 2.0,
    ) -> None:
        self.spec, self.cluster, self.announce, self.poll_s = spec, cluster, announce, poll_s
        self.model = spec.model or spec.name  # the runtime serves the model under its name
        self.original: dict[str, Any] | None = None  # the service as first read
        self.applied = False  # a patch was sent since the last restore
        cluster.on_patch = self._said

    def _said(self, patch: dict[str, Any], applied: bool) -> None:
        verb = "patching" if applied else "dry run, not sent: patch for"
        self.announce(f"{verb} {self.cluster.where}: {json.dumps(patch, separators=(',', ':'))}")

    def _read(self) -> dict[str, Any]:
        obj = self.cluster.read_object()
        if self.original is None:
            self.original = copy.deepcopy(obj)
        return obj

    def _patch(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        if self.original is None:
            self._read()
        assert self.original is not None
        try:
            return isvc_patch(self.original, setting, self.spec.container)
        except ValueError as exc:
            raise UsageError(f"{self.cluster.where}: {exc}") from None

    def start(self, setting: Mapping[str, Any], log_path: Path) -> Launched:
        current = self._read()
        assert self.original is not None
        # Both lists, so a list this setting leaves alone loses what the last one put there.
        patch = _merged(
            isvc_restore_patch(self.original, self.spec.container), self._patch(setting)
        )
        before = ServiceState.from_object(current)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = [f"# harness tune: merge patch for {self.cluster.where}", json.dumps(patch)]
        log_path.write_text("\n".join(log) + "\n", encoding="utf-8")
        if not self.cluster.apply:
            self.cluster.patch(patch)  # recorded and announced, not sent
            return Launched("", self.model, (DRY_RUN_NOTE,))
        if before.canary_percent not in (None, 100):
            raise UsageError(
                f"{self.cluster.where} sends only {before.canary_percent} % to its latest "
                "revision (canaryTrafficPercent): finish or roll back that rollout first, a "
                "setting has to get all the traffic to be measured"
            )
        notes: tuple[str, ...] = ()
        if _merged(current.get("spec"), patch["spec"]) == current.get("spec"):
            check = _ready_check(before, new_revision=False)
            notes = ("the InferenceService already runs this setting: nothing patched",)
        else:
            self.cluster.patch(patch)
            self.applied = True
            check = _ready_check(before, new_revision=True)
        try:
            state = self.cluster.wait_for(check, "the setting is not in effect",
                                          self.spec.ready_timeout_s, self.poll_s)  # fmt: skip
        except ClusterError as exc:
            tail = self._status_lines()
            _append(log_path, tail)
            raise LaunchFailed(str(exc), tail) from None
        _append(log_path, status_lines(state))
        url = self.spec.url or (state.url.rstrip("/") + OPENAI_PATH if state.url else None)
        if url is None:
            raise LaunchFailed(
                f"{self.cluster.where} reports no status.url: set launcher.url to its OpenAI "
                "base URL", status_lines(state)
            )  # fmt: skip
        return Launched(url, self.model, notes)

    def _status_lines(self) -> list[str]:
        try:
            return status_lines(self.cluster.read())
        except ClusterError as exc:
            return [str(exc)]

    def stop(self) -> None:
        """Nothing to stop: the service keeps running the last setting until the next
        ``start`` patches it or ``restore`` puts its own settings back."""

    def restore(self) -> None:
        """Patch the predictor's args and env back to what they were before the first start
        (not waited for: KServe rolls them out as a new revision)."""
        if not self.applied or self.original is None:
            return
        self.cluster.patch(isvc_restore_patch(self.original, self.spec.container))
        self.applied = False
        self.announce(f"restored the args and env {self.cluster.where} had before the study")

    def describe(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        return {"vllm_serve": serve_command(self.model, setting),
                "isvc_patch": self._patch(setting)}  # fmt: skip


def _ready_check(
    before: ServiceState, new_revision: bool
) -> Callable[[ServiceState], tuple[bool, str]]:
    """When a patched service runs its new setting (see the module's docstring)."""

    def check(state: ServiceState) -> tuple[bool, str]:
        if not state.splits_traffic:  # RawDeployment: no revisions
            seen, wanted = state.observed_generation, state.generation
            if new_revision and seen is not None and wanted is not None and seen < wanted:
                return False, f"KServe has not yet observed generation {wanted} (at {seen})"
            return state.ready()
        if (
            new_revision
            and state.latest_ready is not None
            and (state.latest_ready == before.latest_ready)
        ):
            ok, why = state.ready()
            return False, (
                f"revision {state.latest_ready} from before the patch is still the latest ready "
                "one" + ("" if ok else f"; {why}")
            )
        return state.in_effect(100)

    return check


def status_lines(state: ServiceState) -> list[str]:
    """What KServe reports of a service, one fact a line (a failed launch's log tail)."""
    lines = [
        f"{kind}: {status}" + (f" ({said})" if said else "")
        for kind, (status, said) in state.conditions.items()
    ]
    lines.append(
        f"latestCreatedRevision: {state.latest_created}, latestReadyRevision: {state.latest_ready}"
    )
    return lines


def _merged(target: Any, patch: Any) -> Any:
    """``target`` with a JSON merge patch applied (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
