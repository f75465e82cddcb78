"""A LiteLLM gateway "deployed" on the Kubernetes API emulator: its config in a ConfigMap, a
Deployment, and a test-side stand-in for the Deployment controller that runs the REAL proxy.

As on a cluster: patching the Deployment's pod template bumps its generation at once (the
API server's part, in ``on_patch``); the controller (a greenlet polling the object, as a
watch would) then replaces the pod, here by restarting the proxy on the same port with the
ConfigMap's current config, and reports the rollout done only once the new proxy is live.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import gevent
import yaml

from support.kube_emulator import CONFIGMAPS, DEPLOYMENTS, KubeEmulator
from support.litellm_proxy import DEFAULT_MASTER_KEY, LitellmError, _await_live, litellm_binary
from support.proc import die_with_parent, free_port, stop

NS, CONFIGMAP, DEPLOYMENT, KEY = "models", "litellm-config", "litellm", "config.yaml"


def gateway_config(models: dict[str, str], fallbacks: dict[str, str] | None = None) -> str:
    """A LiteLLM config: model name -> its backend's OpenAI base URL, optional fallbacks
    (model -> the model that serves when it fails), the master key; retries off, so a failing
    backend falls back at once."""
    config: dict[str, Any] = {
        "model_list": [
            {"model_name": name, "litellm_params": {
                "model": "openai/sim-llama-3-8b", "api_base": base, "api_key": "sk-backend-secret"}}
            for name, base in models.items()
        ],
        "litellm_settings": {"num_retries": 0},
        "general_settings": {"master_key": DEFAULT_MASTER_KEY},
    }  # fmt: skip
    if fallbacks:
        config["router_settings"] = {"fallbacks": [{k: [v]} for k, v in fallbacks.items()]}
    return yaml.safe_dump(config, sort_keys=False)


def deployment(generation: int = 1) -> dict[str, Any]:
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "generation": generation},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "litellm", "image": "litellm"}]}}},
        "status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                   "readyReplicas": 1, "availableReplicas": 1},
    }  # fmt: skip


def seed(k8s: KubeEmulator, config_text: str) -> None:
    """The gateway's ConfigMap (its config under KEY) and Deployment, in place."""
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "data": {KEY: config_text},
                 "metadata": {"name": CONFIGMAP, "namespace": NS}}  # fmt: skip
    k8s.seed(CONFIGMAPS, NS, CONFIGMAP, configmap)
    k8s.seed(DEPLOYMENTS, NS, DEPLOYMENT, deployment())


class Gateway:
    """The proxy, its ConfigMap and Deployment, and the controller stand-in."""

    def __init__(self, k8s: KubeEmulator, config_text: str) -> None:
        self.k8s, self.port = k8s, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.restarts: list[str] = []  # the config text of each restart
        self._dir = Path(tempfile.mkdtemp(prefix="litellm-gateway-"))
        self._proc: subprocess.Popen[bytes] | None = None
        seed(k8s, config_text)
        k8s.on_patch(self._api_server, DEPLOYMENTS)
        self._start(config_text)
        self._watch = gevent.spawn(self._controller)

    def close(self) -> None:
        self._watch.kill()
        if self._proc is not None:
            stop(self._proc, group=True)

    def config(self) -> str:
        text: str = self.k8s.object(CONFIGMAPS, NS, CONFIGMAP)["data"][KEY]
        return text

    @staticmethod
    def _api_server(obj: dict[str, Any]) -> dict[str, Any]:
        """A changed pod template: a new generation, not yet observed, no pod updated."""
        generation = int(obj["metadata"].get("generation", 1)) + 1
        status = {"updatedReplicas": 0, "replicas": 2, "availableReplicas": 1}
        return {"metadata": {"generation": generation}, "status": status}

    def _controller(self) -> None:
        while True:
            obj = self.k8s.object(DEPLOYMENTS, NS, DEPLOYMENT)
            generation = int(obj["metadata"]["generation"])
            if generation > int(obj["status"]["observedGeneration"]):
                self.k8s.update(DEPLOYMENTS, NS, DEPLOYMENT,
                                {"status": {"observedGeneration": generation}})  # fmt: skip
                self._start(self.config())
                self.k8s.update(DEPLOYMENTS, NS, DEPLOYMENT, {"status": {
                    "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}})  # fmt: skip
            gevent.sleep(0.1)

    def _start(self, config_text: str) -> None:
        """(Re)start the proxy on the gateway's port with this config."""
        if self._proc is not None:
            stop(self._proc, group=True)
        binary = litellm_binary()
        if binary is None:
            raise LitellmError("litellm not found: run scripts/test-env (makes .venv-litellm)")
        self.restarts.append(config_text)
        config, log = self._dir / "config.yaml", self._dir / f"litellm-{len(self.restarts)}.log"
        config.write_text(config_text, encoding="utf-8")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
               "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
        env.pop("DATABASE_URL", None)
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(binary), "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=self._dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        _await_live(self._proc, f"http://127.0.0.1:{self.port}/health/liveliness", log)
