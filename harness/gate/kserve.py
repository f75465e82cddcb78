"""A KServe InferenceService as the canary gate reads and changes it: what its status says,
whether a traffic step is in effect, and the merge patches that walk, promote and roll back.

The facts this relies on (KServe v1beta1, serverless mode):

- ``spec.predictor.canaryTrafficPercent: N`` sends N % to the latest revision and the rest to
  ``status.components.predictor.latestRolledoutRevision``; removing the field (a merge patch
  with ``null``) promotes the latest revision to 100 %.
- Rolling back is ``canaryTrafficPercent: 0``, but the bad revision stays the latest: a later
  edit that removes the field would promote it. So a rollback reverts ``storageUri`` first.
- A step is in effect when the conditions Ready, PredictorReady and LatestDeploymentReady are
  True, the latest created revision is the latest ready one, and the latest revision's
  percent in ``status.components.predictor.traffic`` is the one asked for.
- ``RawDeployment`` mode has no traffic split at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

GROUP: Final = "serving.kserve.io"
VERSION: Final = "v1beta1"
PLURAL: Final = "inferenceservices"
DEPLOYMENT_MODE: Final = "serving.kserve.io/deploymentMode"
TAG_ROUTING: Final = "serving.kserve.io/enable-tag-routing"
#: Written by the gate when it starts a rollout: the storageUri to revert to.
PREVIOUS_URI: Final = "slo-harness.io/previous-storage-uri"
READY_CONDITIONS: Final = ("Ready", "PredictorReady", "LatestDeploymentReady")


@dataclass(frozen=True, slots=True)
class Traffic:
    """One entry of status.components.predictor.traffic."""

    revision: str | None
    percent: int
    latest: bool
    tag: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the gate reads from an InferenceService."""

    name: str
    namespace: str
    storage_uri: str | None
    canary_percent: int | None  # None: the field is absent (everything on the latest)
    mode: str  # "Serverless" (the default) or "RawDeployment" (or "ModelMesh")
    conditions: Mapping[str, tuple[str, str]]  # type -> (status, reason or message)
    latest_created: str | None
    latest_ready: str | None
    rolled_out: str | None  # latestRolledoutRevision: what 0 % pins the traffic to
    traffic: tuple[Traffic, ...]
    previous_uri: str | None  # the gate's annotation, when it started the rollout
    tag_routing: bool
    url: str | None = None  # status.url, where the service answers
    generation: int | None = None  # metadata.generation: bumped by every spec change
    observed_generation: int | None = None  # status.observedGeneration, where reported

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ServiceState:
        meta = _dict(obj.get("metadata"))
        annotations = _dict(meta.get("annotations"))
        predictor = _dict(_dict(obj.get("spec")).get("predictor"))
        model = _dict(predictor.get("model"))
        status = _dict(obj.get("status"))
        component = _dict(_dict(status.get("components")).get("predictor"))
        conditions: dict[str, tuple[str, str]] = {}
        for c in _list(status.get("conditions")):
            entry = _dict(c)
            kind = entry.get("type")
            if isinstance(kind, str):
                said = str(entry.get("message") or entry.get("reason") or "")
                conditions[kind] = (str(entry.get("status", "Unknown")), said)
        traffic = tuple(
            Traffic(
                revision=_str(t.get("revisionName")),
                percent=int(t.get("percent") or 0),
                latest=bool(t.get("latestRevision")),
                tag=_str(t.get("tag")),
                url=_str(t.get("url")),
            )
            for t in map(_dict, _list(component.get("traffic")))
        )
        percent = predictor.get("canaryTrafficPercent")
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            storage_uri=_str(model.get("storageUri")) or _str(predictor.get("storageUri")),
            canary_percent=int(percent) if isinstance(percent, int | float) else None,
            mode=str(annotations.get(DEPLOYMENT_MODE) or "Serverless"),
            conditions=conditions,
            latest_created=_str(component.get("latestCreatedRevision")),
            latest_ready=_str(component.get("latestReadyRevision")),
            rolled_out=_str(component.get("latestRolledoutRevision")),
            traffic=traffic,
            previous_uri=_str(annotations.get(PREVIOUS_URI)),
            tag_routing=str(annotations.get(TAG_ROUTING, "")).lower() == "true",
            url=_str(status.get("url")),
            generation=_int(meta.get("generation")),
            observed_generation=_int(status.get("observedGeneration")),
        )

    @property
    def splits_traffic(self) -> bool:
        """False for RawDeployment (and ModelMesh): no canaryTrafficPercent there."""
        return self.mode == "Serverless"

    def latest_percent(self) -> int | None:
        """The percent the latest revision receives, from status."""
        shares = [t.percent for t in self.traffic if t.latest]
        return sum(shares) if shares else None

    def tagged_url(self, tag: str) -> str | None:
        """The URL of the ``latest`` or ``prev`` tag (with tag routing on)."""
        return next((t.url for t in self.traffic if t.tag == tag and t.url), None)

    def ready(self) -> tuple[bool, str]:
        """Whether Ready, PredictorReady and LatestDeploymentReady are all True; if not, the
        first that is not, with what KServe said."""
        for kind in READY_CONDITIONS:
            status, said = self.conditions.get(kind, ("Unknown", "not reported"))
            if status != "True":
                return False, f"{kind} is {status}" + (f": {said}" if said else "")
        return True, "ready"

    def in_effect(self, percent: int) -> tuple[bool, str]:
        """Whether KServe reports a step of ``percent`` % in effect, and if not, why not."""
        ok, why = self.ready()
        if not ok:
            return ok, why
        if self.latest_created != self.latest_ready:
            return False, (
                f"revision {self.latest_created} is created but {self.latest_ready} is the "
                "latest ready one"
            )
        seen = self.latest_percent()
        if seen != percent:
            return False, f"the latest revision has {seen} % of the traffic, not {percent} %"
        return True, f"{percent} % on revision {self.latest_ready}"

    def failed(self) -> str | None:
        """Why the latest revision can never become ready (a failed revision), or None."""
        status, said = self.conditions.get("LatestDeploymentReady", ("Unknown", ""))
        if status == "False" and said:
            lowered = said.lower()
            if any(w in lowered for w in ("fail", "error", "crash", "oom", "unschedulable")):
                return f"LatestDeploymentReady is False: {said}"
        return None


def step_patch(percent: int) -> dict[str, Any]:
    """Send ``percent`` % to the latest revision."""
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def promote_patch() -> dict[str, Any]:
    """Remove canaryTrafficPercent: the latest revision takes all the traffic."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def start_patch(new_uri: str, percent: int, previous_uri: str | None) -> dict[str, Any]:
    """Start a rollout: the new storageUri with the first step's percent, and the URI to
    revert to remembered in an annotation (so a later gate run can roll back)."""
    patch: dict[str, Any] = {
        "spec": {"predictor": {"model": {"storageUri": new_uri}, "canaryTrafficPercent": percent}}
    }
    if previous_uri is not None:
        patch["metadata"] = {"annotations": {PREVIOUS_URI: previous_uri}}
    return patch


def rollback_patches(previous_uri: str | None) -> list[dict[str, Any]]:
    """Roll back, in this order: revert storageUri (where known) so the bad revision can never
    be promoted by a later edit, then pin the traffic to the rolled-out revision with 0 %.
    Idempotent: applying them twice leaves the same service."""
    patches: list[dict[str, Any]] = []
    if previous_uri is not None:
        patches.append({"spec": {"predictor": {"model": {"storageUri": previous_uri}}}})
    patches.append(step_patch(0))
    return patches


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
