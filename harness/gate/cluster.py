"""The InferenceService on the cluster, through the `kubernetes` client: read it, patch it
(or only say what would be patched), and wait for a step to be in effect.

Credentials come from a kubeconfig or the in-cluster service account, nothing else. Every
failure becomes one line a person can act on (ClusterError, exit 4): 401 and 403 name the
permission, 404 the object, and a step that never takes effect says what KServe reported
last. A 409 is retried after a fresh read (a merge patch carries no resourceVersion, so a
conflict means another writer raced; the next attempt applies the same intent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from harness.errors import ExitCode, HarnessError
from harness.gate.kserve import GROUP, PLURAL, VERSION, ServiceState

CONFLICT_RETRIES: Final = 3


class ClusterError(HarnessError):
    """The cluster refused or did not answer: the gate stops, the service as last verified."""

    exit_code = ExitCode.INVALID


@dataclass
class Cluster:
    """One InferenceService, read and patched through a Kubernetes API client. With
    ``apply`` False, patches are recorded and printed, never sent."""

    api: client.ApiClient
    namespace: str
    name: str
    apply: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)  # every patch, sent or not
    on_patch: Callable[[dict[str, Any], bool], None] = lambda patch, applied: None

    @classmethod
    def connect(
        cls, namespace: str, name: str, apply: bool, kubeconfig: str | None = None
    ) -> Cluster:
        """The in-cluster service account when running in a pod, else the kubeconfig."""
        return cls(api_client(kubeconfig), namespace, name, apply)

    @property
    def where(self) -> str:
        return f"InferenceService {self.namespace}/{self.name}"

    def read(self) -> ServiceState:
        return ServiceState.from_object(self.read_object())

    def read_object(self) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.api)
        refusal = Refusal(self.where, "inferenceservices", self.namespace)
        return fetch(
            lambda: api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            ),
            refusal,
        )

    def patch(self, body: dict[str, Any]) -> None:
        """A JSON merge patch; without ``apply`` only recorded."""
        self.sent.append(body)
        self.on_patch(body, self.apply)
        if not self.apply:
            return
        api = client.CustomObjectsApi(self.api)
        send_patch(
            lambda: api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            ),
            self.read_object,
            Refusal(self.where, "inferenceservices", self.namespace),
        )

    def wait_in_effect(self, percent: int, timeout_s: float, poll_s: float = 2.0) -> ServiceState:
        """Poll until KServe reports ``percent`` % in effect; ClusterError on a failed
        revision or at the timeout, with what it reported last."""
        return self.wait_for(
            lambda state: state.in_effect(percent), f"{percent} % not in effect", timeout_s, poll_s
        )

    def wait_for(
        self,
        check: Callable[[ServiceState], tuple[bool, str]],
        what: str,
        timeout_s: float,
        poll_s: float = 2.0,
    ) -> ServiceState:
        """Poll until ``check`` holds (it says why not otherwise); ClusterError on a failed
        revision or at the timeout ("WHERE: WHAT after N s (why)")."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.read()
            ok, why = check(state)
            if ok:
                return state
            failed = state.failed()
            if failed is not None:
                raise ClusterError(f"{self.where}: the new revision failed: {failed}")
            if time.monotonic() >= deadline:
                raise ClusterError(f"{self.where}: {what} after {timeout_s:g} s ({why})")
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """Credentials from the in-cluster service account (in a pod), else the kubeconfig:
    nothing else."""
    configuration = client.Configuration()
    in_cluster: Any = config.load_incluster_config  # the client's loaders are untyped
    from_file: Any = config.load_kube_config
    try:
        if kubeconfig is None:
            try:
                in_cluster(client_configuration=configuration)
            except ConfigException:
                from_file(client_configuration=configuration)
        else:
            from_file(config_file=kubeconfig, client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise ClusterError(f"no cluster credentials: {exc}") from None
    return client.ApiClient(configuration)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Turns the API's refusals of one object into the one line a person can act on."""

    where: str  # e.g. "InferenceService models/llm"
    plural: str  # what the Role must allow, e.g. "inferenceservices"
    namespace: str

    def error(self, what: str, exc: ApiException) -> ClusterError:
        status = exc.status
        if status == 401:
            said = "the cluster did not accept the credentials (401): check the kubeconfig"
        elif status == 403:
            verb = "patch" if what == "patch" else "get"
            said = (
                f"forbidden (403): the gate's account may not {verb} {self.plural} in "
                f"{self.namespace} (deploy/gate/ has the Role it needs)"
            )
        elif status == 404:
            said = "not found (404): check the name and the namespace"
        elif status == 409:
            said = f"conflict (409) {CONFLICT_RETRIES + 1} times: another writer keeps changing it"
        else:
            said = f"HTTP {status} {exc.reason}"
        return ClusterError(f"{what} {self.where}: {said}")


def fetch(read: Callable[[], Any], refusal: Refusal) -> dict[str, Any]:
    """Read one object as a plain dict, refusals as one line."""
    try:
        obj = read()
    except ApiException as exc:
        raise refusal.error("read", exc) from None
    except OSError as exc:
        raise ClusterError(f"the cluster did not answer a read of {refusal.where}: {exc}") from None
    if isinstance(getattr(obj, "data", None), bytes):  # read with _preload_content=False:
        obj = json.loads(obj.data)  # the object as the API wrote it (camelCase keys)
    if not isinstance(obj, dict):
        raise ClusterError(f"the cluster answered a read of {refusal.where} without an object")
    return obj


def send_patch(send: Callable[[], Any], reread: Callable[[], Any], refusal: Refusal) -> None:
    """Send a merge patch; a 409 is retried after a fresh read (a merge patch carries no
    resourceVersion, so a conflict means another writer raced: the same intent again)."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            send()
            return
        except ApiException as exc:
            if exc.status == 409 and attempt < CONFLICT_RETRIES:
                reread()
                continue
            raise refusal.error("patch", exc) from None
        except OSError as exc:
            raise ClusterError(
                f"the cluster did not answer a patch of {refusal.where}: {exc}"
            ) from None
