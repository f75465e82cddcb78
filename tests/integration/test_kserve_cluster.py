"""The gate's hold on an InferenceService, with the real `kubernetes` client against a
Kubernetes API emulator and a test-side stand-in for KServe's controller: steps take effect
or time out, a failed revision is reported, refusals are one clear line with exit 4 and
nothing half-applied, a 409 is retried, and a dry run writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.kserve_controller import NAME, NS, Controller, isvc
from support.kube_emulator import ISVC, KubeEmulator

from harness.errors import ExitCode
from harness.gate.cluster import Cluster, ClusterError
from harness.gate.kserve import rollback_patches, start_patch, step_patch

pytestmark = pytest.mark.integration


@pytest.fixture
def k8s() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.seed(ISVC, NS, NAME, isvc())
        yield emulator


def cluster(k8s: KubeEmulator, apply: bool = True) -> Cluster:
    return Cluster(k8s.api_client(), NS, NAME, apply=apply)


def test_a_rollout_steps_takes_effect_and_rolls_back_idempotently(k8s: KubeEmulator) -> None:
    k8s.on_patch(Controller())
    gate = cluster(k8s)
    assert gate.read().storage_uri == "s3://models/v1"
    gate.patch(start_patch("s3://models/v2", 10, "s3://models/v1"))
    state = gate.wait_in_effect(10, timeout_s=5, poll_s=0.05)
    assert (state.latest_ready, state.rolled_out) == ("llm-predictor-2", "llm-predictor-1")
    gate.patch(step_patch(50))
    assert gate.wait_in_effect(50, timeout_s=5, poll_s=0.05).latest_percent() == 50
    for _ in range(2):  # twice: the same service
        for patch in rollback_patches(gate.read().previous_uri):
            gate.patch(patch)
    stored = k8s.object(ISVC, NS, NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v1"
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_without_apply_nothing_is_written(k8s: KubeEmulator) -> None:
    gate = cluster(k8s, apply=False)
    gate.read()
    gate.patch(start_patch("s3://models/v2", 10, "s3://models/v1"))
    assert gate.sent == [start_patch("s3://models/v2", 10, "s3://models/v1")]
    assert k8s.writes() == []
    assert k8s.object(ISVC, NS, NAME) == isvc()


def test_a_step_that_never_takes_effect_times_out_with_what_kserve_said(
    k8s: KubeEmulator,
) -> None:
    k8s.on_patch(Controller(ready=False))
    gate = cluster(k8s)
    gate.patch(start_patch("s3://models/v2", 10, "s3://models/v1"))
    with pytest.raises(ClusterError) as error:
        gate.wait_in_effect(10, timeout_s=0.3, poll_s=0.05)
    assert error.value.exit_code == ExitCode.INVALID
    assert str(error.value) == (
        "InferenceService models/llm: 10 % not in effect after 0.3 s "
        "(LatestDeploymentReady is Unknown)"
    )


def test_a_failed_revision_stops_the_wait_at_once(k8s: KubeEmulator) -> None:
    k8s.on_patch(Controller(fail="Revision failed: container OOMKilled"))
    gate = cluster(k8s)
    gate.patch(start_patch("s3://models/v2", 10, "s3://models/v1"))
    with pytest.raises(ClusterError) as error:
        gate.wait_in_effect(10, timeout_s=30, poll_s=0.05)
    assert str(error.value).endswith(
        "the new revision failed: LatestDeploymentReady is False: Revision failed: container "
        "OOMKilled"
    )


@pytest.mark.parametrize(
    ("status", "reason", "said"),
    [
        (
            401,
            "Unauthorized",
            "the cluster did not accept the credentials (401): check the kubeconfig",
        ),
        (403, "Forbidden", "forbidden (403): the gate's account may not patch inferenceservices"),
        (404, "NotFound", "not found (404): check the name and the namespace"),
    ],
)
def test_a_refused_patch_is_one_line_and_changes_nothing(
    k8s: KubeEmulator, status: int, reason: str, said: str
) -> None:
    k8s.fail_next("patch", status, reason)
    gate = cluster(k8s)
    with pytest.raises(ClusterError) as error:
        gate.patch(step_patch(10))
    assert str(error.value) == f"patch InferenceService models/llm: {said}" + (
        " in models (deploy/gate/ has the Role it needs)" if status == 403 else ""
    )
    assert error.value.exit_code == ExitCode.INVALID
    assert k8s.object(ISVC, NS, NAME) == isvc()


def test_a_conflict_is_retried_after_a_fresh_read(k8s: KubeEmulator) -> None:
    k8s.fail_next("patch", 409, "Conflict", count=2)
    gate = cluster(k8s)
    gate.patch(step_patch(10))
    assert k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert [m for m, _ in k8s.writes()] == ["PATCH", "PATCH", "PATCH"]


def test_credentials_come_from_a_kubeconfig(k8s: KubeEmulator, tmp_path: Any) -> None:
    path = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    gate = Cluster.connect(NS, NAME, apply=False, kubeconfig=str(path))
    assert gate.read().storage_uri == "s3://models/v1"
    with pytest.raises(ClusterError, match="no cluster credentials"):
        Cluster.connect(NS, NAME, apply=False, kubeconfig=str(tmp_path / "missing"))
