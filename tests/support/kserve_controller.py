"""A test-side stand-in for KServe's controller, and an InferenceService as KServe serves it
(no real controller runs here: it updates status after each patch, as ``on_patch`` calls it)."""

from __future__ import annotations

from typing import Any

NS, NAME = "models", "llm"


def isvc(percent: int | None = None, uri: str = "s3://models/v1") -> dict[str, Any]:
    """A served InferenceService: one revision, all the traffic, everything Ready."""
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "vllm"}, "storageUri": uri}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"predictor": predictor},
        "status": {
            "conditions": [{"type": t, "status": "True"}
                           for t in ("Ready", "PredictorReady", "LatestDeploymentReady")],
            "components": {"predictor": {
                "latestCreatedRevision": "llm-predictor-1",
                "latestReadyRevision": "llm-predictor-1",
                "latestRolledoutRevision": "llm-predictor-1",
                "traffic": [{"revisionName": "llm-predictor-1", "percent": 100,
                             "latestRevision": True}],
            }},
        },
    }  # fmt: skip


class Controller:
    """KServe's part: a new storageUri makes a new revision; the latest revision gets the
    canary percent (all of it when the field is absent). ``ready=False`` leaves the new
    revision starting forever; ``fail`` makes it fail."""

    def __init__(self, ready: bool = True, fail: str | None = None) -> None:
        self.ready, self.fail = ready, fail
        self.revision, self.uri = 1, "s3://models/v1"

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        predictor = obj["spec"]["predictor"]
        uri = predictor["model"]["storageUri"]
        rolled_out = f"llm-predictor-{self.revision}"
        if uri != self.uri:
            self.revision, self.uri = self.revision + 1, uri
        latest = f"llm-predictor-{self.revision}"
        percent = predictor.get("canaryTrafficPercent")
        share = 100 if percent is None else int(percent)
        traffic = [{"revisionName": latest, "percent": share, "latestRevision": True}]
        if share < 100 and latest != rolled_out:
            traffic.append({"revisionName": rolled_out, "percent": 100 - share,
                            "latestRevision": False})  # fmt: skip
        deploy: dict[str, Any] = {"type": "LatestDeploymentReady", "status": "True"}
        if self.fail:
            deploy = {"type": "LatestDeploymentReady", "status": "False", "message": self.fail}
        elif not self.ready:
            deploy = {"type": "LatestDeploymentReady", "status": "Unknown"}
        return {"status": {
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "PredictorReady", "status": "True"}, deploy],
            "components": {"predictor": {
                "latestCreatedRevision": latest,
                "latestReadyRevision": latest if self.ready and not self.fail else rolled_out,
                "latestRolledoutRevision": rolled_out, "traffic": traffic,
            }},
        }}  # fmt: skip
