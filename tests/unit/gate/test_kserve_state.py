"""Reading an InferenceService's status the way the gate decides on it, and the patches it
sends, on objects shaped as KServe writes them."""

from __future__ import annotations

from typing import Any

import pytest

from harness.gate.kserve import (
    PREVIOUS_URI,
    ServiceState,
    promote_patch,
    rollback_patches,
    start_patch,
    step_patch,
)


def service(percent: int | None = 10, latest_share: int = 10, **status: Any) -> dict[str, Any]:
    """An InferenceService mid-canary: the latest revision holds ``latest_share`` %."""
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "vllm"},
                                           "storageUri": "s3://models/v2"}}  # fmt: skip
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    traffic = [
        {"revisionName": "llm-predictor-00002", "percent": latest_share, "latestRevision": True,
         "tag": "latest", "url": "http://latest-llm.ns.example.com"},
        {"revisionName": "llm-predictor-00001", "percent": 100 - latest_share,
         "latestRevision": False, "tag": "prev", "url": "http://prev-llm.ns.example.com"},
    ]  # fmt: skip
    conditions = [{"type": t, "status": "True"} for t in
                  ("Ready", "PredictorReady", "LatestDeploymentReady")]  # fmt: skip
    body: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "ns",
                     "annotations": {"serving.kserve.io/enable-tag-routing": "true"}},
        "spec": {"predictor": predictor},
        "status": {
            "conditions": conditions,
            "components": {"predictor": {
                "latestCreatedRevision": "llm-predictor-00002",
                "latestReadyRevision": "llm-predictor-00002",
                "latestRolledoutRevision": "llm-predictor-00001",
                "traffic": traffic,
            }},
        },
    }  # fmt: skip
    body["status"].update(status)
    return body


def test_a_step_in_effect_reads_as_such() -> None:
    state = ServiceState.from_object(service())
    assert state.storage_uri == "s3://models/v2"
    assert state.canary_percent == 10
    assert state.splits_traffic
    assert state.tag_routing
    assert state.rolled_out == "llm-predictor-00001"
    assert state.tagged_url("latest") == "http://latest-llm.ns.example.com"
    assert state.tagged_url("prev") == "http://prev-llm.ns.example.com"
    assert state.in_effect(10) == (True, "10 % on revision llm-predictor-00002")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"conditions": [{"type": "Ready", "status": "False", "reason": "RevisionMissing"}]},
         "Ready is False: RevisionMissing"),
        ({"conditions": [{"type": "Ready", "status": "True"}]},
         "PredictorReady is Unknown: not reported"),
    ],
)  # fmt: skip
def test_a_step_not_yet_in_effect_says_why(change: dict[str, Any], why: str) -> None:
    assert ServiceState.from_object(service(**change)).in_effect(10) == (False, why)


def test_traffic_not_yet_moved_and_a_revision_not_yet_ready_are_not_in_effect() -> None:
    moved = ServiceState.from_object(service(percent=50, latest_share=10))
    assert moved.in_effect(50) == (False, "the latest revision has 10 % of the traffic, not 50 %")
    body = service()
    body["status"]["components"]["predictor"]["latestCreatedRevision"] = "llm-predictor-00003"
    created = ServiceState.from_object(body)
    assert created.in_effect(10)[0] is False
    assert "llm-predictor-00003 is created" in created.in_effect(10)[1]


def test_a_failed_revision_is_told_apart_from_one_still_starting() -> None:
    failed = service(conditions=[{"type": "LatestDeploymentReady", "status": "False",
                                  "message": "Revision failed: container OOMKilled"}])  # fmt: skip
    assert ServiceState.from_object(failed).failed() == (
        "LatestDeploymentReady is False: Revision failed: container OOMKilled"
    )
    starting = service(conditions=[{"type": "LatestDeploymentReady", "status": "Unknown"}])
    assert ServiceState.from_object(starting).failed() is None


def test_raw_deployment_has_no_traffic_split_and_no_field_means_promoted() -> None:
    body = service(percent=None, latest_share=100)
    body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    state = ServiceState.from_object(body)
    assert not state.splits_traffic
    assert state.canary_percent is None
    assert state.latest_percent() == 100


def test_an_object_missing_everything_reads_without_error() -> None:
    state = ServiceState.from_object({"metadata": {"name": "x"}})
    assert state.storage_uri is None
    assert state.in_effect(10) == (False, "Ready is Unknown: not reported")
    assert state.latest_percent() is None


def test_the_patches_say_what_kserve_expects() -> None:
    assert step_patch(50) == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    assert promote_patch() == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert start_patch("s3://models/v3", 10, "s3://models/v2") == {
        "spec": {"predictor": {"model": {"storageUri": "s3://models/v3"},
                               "canaryTrafficPercent": 10}},
        "metadata": {"annotations": {PREVIOUS_URI: "s3://models/v2"}},
    }  # fmt: skip
    # the URI is reverted before the traffic is pinned; without one, only the pin
    assert rollback_patches("s3://models/v2") == [
        {"spec": {"predictor": {"model": {"storageUri": "s3://models/v2"}}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
    ]
    assert rollback_patches(None) == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}}]
