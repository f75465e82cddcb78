"""A test-side stand-in for KServe's controller, and an InferenceService as KServe serves it
(no real controller runs here: it updates status after each patch, as ``on_patch`` calls it)."""

from __future__ import annotations

import json
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


#: An engine's InferenceService: vLLM args and env a tuning study patches.
ARGS = ["--model_name=llm", "--max-model-len=4096", "--max-num-seqs", "256"]
ENV = [{"name": "HF_HOME", "value": "/cache"}]


def engine_isvc() -> dict[str, Any]:
    body: dict[str, Any] = isvc()
    body["spec"]["predictor"]["model"].update(args=list(ARGS), env=list(ENV))
    body["status"]["url"] = "http://llm.models.example.com"
    return body


class RevisingController:
    """KServe's part for engine settings: every change of the predictor (its traffic share
    aside) is a new revision, ready with all the traffic unless ``ready`` is False."""

    def __init__(self, ready: bool = True) -> None:
        self.ready, self.revision = ready, 1
        self.spec = self._spec(engine_isvc())

    @staticmethod
    def _spec(obj: dict[str, Any]) -> str:
        predictor = dict(obj["spec"]["predictor"])
        predictor.pop("canaryTrafficPercent", None)
        return json.dumps(predictor, sort_keys=True)

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(obj)
        if spec != self.spec:
            self.spec, self.revision = spec, self.revision + 1
        latest, served = f"llm-predictor-{self.revision}", "llm-predictor-1"
        ready = latest if self.ready else obj["status"]["components"]["predictor"][
            "latestReadyRevision"]  # fmt: skip
        deploy = "True" if self.ready else "Unknown"
        return {"status": {
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "PredictorReady", "status": "True"},
                           {"type": "LatestDeploymentReady", "status": deploy}],
            "components": {"predictor": {
                "latestCreatedRevision": latest, "latestReadyRevision": ready,
                "latestRolledoutRevision": served,
                "traffic": [{"revisionName": ready, "percent": 100, "latestRevision": True}],
            }},
        }}  # fmt: skip
