"""The LiteLLM blue-green path: one model's ``api_base`` in the gateway's ConfigMap, the
gateway's Deployment restarted (as ``kubectl rollout restart`` does: an annotation on the pod
template) and waited on, and the gateway asked which backend it now routes to.

LiteLLM reads its config at start-up only, so a ConfigMap change takes effect with the
restart; the rollout is done when the Deployment's controller has seen the change and every
replica is updated and available (kubectl's own test). Verification asks the gateway twice:
``/v1/model/info`` says where the model is routed, and a probe request's
``x-litellm-model-api-base`` header says who answered (a fallback answers 200 too, and names
itself there, with ``x-litellm-attempted-fallbacks``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from kubernetes import client

from harness.errors import UsageError
from harness.gate.cluster import ClusterError, Refusal, fetch, send_patch

RESTARTED_AT: Final = "kubectl.kubernetes.io/restartedAt"


def switch_config(text: str, model: str, api_base: str, where: str) -> tuple[str, str]:
    """The LiteLLM config with ``model``'s api_base set, and the api_base it had. The model
    must have exactly one deployment: with several, which one is blue is not known. Comments
    in the config do not survive (it is written back as plain YAML)."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: the LiteLLM config is not YAML: {exc}") from None
    entries = config.get("model_list") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{where}: model_list: expected a list of models")
    mine = [e for e in entries if isinstance(e, dict) and e.get("model_name") == model]
    if len(mine) != 1:
        names = sorted({str(e.get("model_name")) for e in entries if isinstance(e, dict)})
        raise UsageError(
            f"{where}: model_list: expected one deployment of {model!r}, found {len(mine)} "
            f"(models: {', '.join(names)})"
        )
    params = mine[0].get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("api_base"), str):
        raise UsageError(f"{where}: model_list[{model}].litellm_params.api_base: expected a URL")
    old = str(params["api_base"])
    params["api_base"] = api_base
    return yaml.safe_dump(config, sort_keys=False), old


_SECRET_WORDS: Final = ("key", "token", "secret", "password")


def masked_config(text: str) -> str:
    """A LiteLLM config fit to print: the value of every key, token, secret or password
    masked, except LiteLLM's ``os.environ/NAME`` references, which hold no secret."""

    def mask(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: "***"
                if isinstance(v, str | int)
                and any(w in str(k).lower() for w in _SECRET_WORDS)
                and not str(v).startswith("os.environ/")
                else mask(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [mask(v) for v in node]
        return node

    try:
        return yaml.safe_dump(mask(yaml.safe_load(text)), sort_keys=False)
    except yaml.YAMLError:
        return "(not YAML: not shown)"


def restart_patch(at: str) -> dict[str, Any]:
    """What ``kubectl rollout restart`` sends: a new pod template, so every pod is replaced."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}


def rollout_state(obj: dict[str, Any]) -> tuple[bool | None, str]:
    """(True, _) when the rollout is complete, (None, why) while it goes, (False, why) when
    it failed (its progress deadline passed): kubectl rollout status's test."""
    meta, spec, status = (obj.get(k) or {} for k in ("metadata", "spec", "status"))
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return False, f"the rollout exceeded its progress deadline: {c.get('message', '')}"
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return None, "the controller has not seen the change yet"
    wanted = int(spec.get("replicas", 1) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return None, f"{updated} of {wanted} replicas updated"
    if int(status.get("replicas") or 0) > updated:
        return None, "old replicas are still terminating"
    available = int(status.get("availableReplicas") or 0)
    if available < updated:
        return None, f"{available} of {updated} updated replicas available"
    return True, f"{updated} replicas updated and available"


@dataclass
class Gateway:
    """The gateway's ConfigMap and Deployment, read and patched (or, without ``apply``, only
    recorded) through a Kubernetes API client."""

    api: client.ApiClient
    namespace: str
    configmap: str
    key: str
    deployment: str
    apply: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)
    on_patch: Callable[[str, dict[str, Any], bool], None] = lambda where, body, applied: None

    @property
    def config_where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.configmap}"

    @property
    def deployment_where(self) -> str:
        return f"Deployment {self.namespace}/{self.deployment}"

    def read_config(self) -> str:
        core = client.CoreV1Api(self.api)
        obj = self._read_configmap(core)
        text = (obj.get("data") or {}).get(self.key)
        if not isinstance(text, str):
            raise UsageError(f"{self.config_where} has no key {self.key!r} (--litellm-config-key)")
        return text

    def write_config(self, text: str) -> None:
        core = client.CoreV1Api(self.api)
        body = {"data": {self.key: text}}
        self._record(self.config_where, body)
        if self.apply:
            send_patch(
                lambda: core.patch_namespaced_config_map(
                    self.configmap, self.namespace, body, _preload_content=False
                ),
                lambda: self._read_configmap(core),
                Refusal(self.config_where, "configmaps", self.namespace),
            )

    def restart(self, at: str) -> None:
        apps = client.AppsV1Api(self.api)
        body = restart_patch(at)
        self._record(self.deployment_where, body)
        if self.apply:
            send_patch(
                lambda: apps.patch_namespaced_deployment(
                    self.deployment, self.namespace, body, _preload_content=False
                ),
                lambda: self._read_deployment(apps),
                Refusal(self.deployment_where, "deployments", self.namespace),
            )

    def wait_rolled_out(self, timeout_s: float, poll_s: float) -> str:
        apps = client.AppsV1Api(self.api)
        deadline = time.monotonic() + timeout_s
        while True:
            done, why = rollout_state(self._read_deployment(apps))
            if done:
                return why
            if done is False:
                raise ClusterError(f"{self.deployment_where}: {why}")
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{self.deployment_where}: not rolled out after {timeout_s:g} s ({why})"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def _record(self, where: str, body: dict[str, Any]) -> None:
        """Journalled and printed with every credential in a config masked."""
        data = body.get("data")
        if isinstance(data, dict):
            body = {"data": {k: masked_config(str(v)) for k, v in data.items()}}
        self.sent.append({"object": where, "patch": body})
        self.on_patch(where, body, self.apply)

    def _read_configmap(self, core: client.CoreV1Api) -> dict[str, Any]:
        return fetch(
            lambda: core.read_namespaced_config_map(
                self.configmap, self.namespace, _preload_content=False
            ),
            Refusal(self.config_where, "configmaps", self.namespace),
        )

    def _read_deployment(self, apps: client.AppsV1Api) -> dict[str, Any]:
        return fetch(
            lambda: apps.read_namespaced_deployment(
                self.deployment, self.namespace, _preload_content=False
            ),
            Refusal(self.deployment_where, "deployments", self.namespace),
        )


@dataclass(frozen=True, slots=True)
class Served:
    """Who answered a probe through the gateway."""

    api_base: str | None  # x-litellm-model-api-base
    fallbacks: int  # x-litellm-attempted-fallbacks
    status: int


def same_base(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")


def routed_base(gateway_url: str, model: str, key: str | None, timeout_s: float = 10.0) -> str:
    """The api_base the gateway routes ``model`` to, from its ``/v1/model/info``."""
    document = _get_json(f"{gateway_url.rstrip('/')}/model/info", key, timeout_s)
    for entry in document.get("data") or []:
        if isinstance(entry, dict) and entry.get("model_name") == model:
            base = (entry.get("litellm_params") or {}).get("api_base")
            if isinstance(base, str):
                return base
    raise ClusterError(f"the gateway at {gateway_url} lists no api_base for {model!r}")


def probe(gateway_url: str, model: str, key: str | None, timeout_s: float = 60.0) -> Served:
    """One short chat request through the gateway; who served it."""
    body = json.dumps({"model": model, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "ping"}]}).encode()  # fmt: skip
    req = urllib.request.Request(f"{gateway_url.rstrip('/')}/chat/completions", data=body,
                                 headers=_headers(key), method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            headers, status = resp.headers, resp.status
    except urllib.error.HTTPError as exc:
        headers, status = exc.headers, exc.code
    except OSError as exc:
        raise ClusterError(f"the gateway at {gateway_url} did not answer a probe: {exc}") from None
    fallbacks = headers.get("x-litellm-attempted-fallbacks") or "0"
    return Served(
        api_base=headers.get("x-litellm-model-api-base"),
        fallbacks=int(fallbacks) if fallbacks.isdigit() else 0,
        status=status,
    )


def _headers(key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _get_json(url: str, key: str | None, timeout_s: float) -> dict[str, Any]:
    req = urllib.request.Request(url, headers=_headers(key))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            document = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"the gateway did not answer {url}: {exc}") from None
    if not isinstance(document, dict):
        raise ClusterError(f"the gateway answered {url} without an object")
    return document
