"""`harness gate SCENARIO --litellm-configmap NAME --litellm-model MODEL --new-api-base URL`:
the runbook's blue-green path through the LiteLLM gateway.

The baseline is measured through the gateway first (the old backend, the path users take);
then the model's api_base is switched in the ConfigMap, the gateway restarted and waited on,
the switch verified (the gateway routes the model to the new backend, and a probe says who
answered), and the same scenario measured again through the gateway. The new backend is
judged against the policy and the baseline; anything but PROMOTE switches back (the original
config, byte for byte), since a blue-green switch has no partial weight to hold at.

The two runs are sequential, not simultaneous: cluster conditions may differ between them
(docs/canary-gate.md says so). Without --apply, the new backend is measured directly at its
api_base beside the gateway, and every patch is printed, not sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.errors import ExitCode, UsageError
from harness.flows.step_runs import (
    GateOptions,
    StepJudged,
    StepRunner,
    drive,
    undo_on_interrupt,
)
from harness.gate.cluster import ClusterError, api_client
from harness.gate.gateway import Gateway, probe, routed_base, same_base, switch_config
from harness.gate.steps import GATE_SCHEMA, STEP_EXIT, Journal, StepDecision
from harness.records.run_dir import new_run_dir
from harness.report.files import write_atomic


@dataclass(frozen=True, slots=True, kw_only=True)
class BlueGreenRequest(GateOptions):
    configmap: str
    model: str
    new_api_base: str
    deployment: str = "litellm"
    config_key: str = "config.yaml"
    gateway_url: str | None = None  # default: the scenario's target.url


def switch_and_report(
    req: BlueGreenRequest, console: Console, announce: Callable[[str], None]
) -> ExitCode:
    """The command: baseline, switch, verify, judge, keep or switch back."""
    scenario, runner = StepRunner.for_scenario(req.scenario_file, req.policy_file, req.overrides)
    gateway_url = req.gateway_url or scenario.target.url
    if gateway_url is None:
        raise UsageError("the gateway's URL: give --gateway-url or set target.url")
    key = os.environ.get(scenario.target.api_key_env)
    gateway = Gateway(api_client(req.kubeconfig), req.namespace, req.configmap, req.config_key,
                      req.deployment, req.apply)  # fmt: skip
    _, gate_dir = new_run_dir(req.out, f"gate-{req.model}")
    journal = Journal(gate_dir / "gate.jsonl")

    def patched(where: str, body: dict[str, Any], applied: bool) -> None:
        journal.write("patch", object=where, body=body, applied=applied)
        announce(f"{'patch' if applied else 'would patch'} {where}: {json.dumps(body)}")

    gateway.on_patch = patched
    switch = _Switch(req, gateway, gateway_url, key, journal, gate_dir, runner, announce)
    return drive(switch, journal, gate_dir, console)


class _Switch:
    def __init__(
        self,
        req: BlueGreenRequest,
        gateway: Gateway,
        gateway_url: str,
        key: str | None,
        journal: Journal,
        gate_dir: Path,
        runner: StepRunner,
        announce: Callable[[str], None],
    ) -> None:
        self.req, self.gateway, self.url, self.key = req, gateway, gateway_url, key
        self.journal, self.gate_dir, self.runner, self.announce = (
            journal,
            gate_dir,
            runner,
            announce,
        )
        self.original = ""
        self.old_base: str | None = None
        self.switched = False  # the gateway was told to route to the new backend
        self.judged: StepJudged | None = None
        self.served: dict[str, Any] | None = None
        self.decision, self.reason = "RUNNING", ""

    def run(self) -> ExitCode:
        req, where = self.req, self.gateway.config_where
        self.original = self.gateway.read_config()
        switched_text, self.old_base = switch_config(
            self.original, req.model, req.new_api_base, where
        )
        self.journal.write("read", object=where, model=req.model, api_base=self.old_base)
        if same_base(self.old_base, req.new_api_base):
            raise UsageError(f"{where} already routes {req.model} to {req.new_api_base}")
        if not req.apply:
            return self._dry_run(switched_text)
        self.announce(f"baseline: the scenario through the gateway, on {self.old_base}")
        baseline = self.runner.run({"baseline": self.url}, self.gate_dir / "before")["baseline"]
        self.switched = True
        self._switch_to(switched_text, req.new_api_base)
        self.announce(f"canary: the scenario through the gateway, on {req.new_api_base}")
        canary = self.runner.run({"canary": self.url}, self.gate_dir / "after")["canary"]
        self.judged = self.runner.assess(100, {"canary": canary, "baseline": baseline})
        return self._decide()

    def _dry_run(self, switched_text: str) -> ExitCode:
        self.gateway.write_config(switched_text)
        self.gateway.restart(_now())
        self.announce(f"dry run: the new backend measured directly at {self.req.new_api_base}, "
                      "beside the gateway")  # fmt: skip
        urls = {"canary": self.req.new_api_base, "baseline": self.url}
        self.judged = self.runner.judge(100, urls, self.gate_dir / "dry-run")
        return self._decide()

    def _decide(self) -> ExitCode:
        assert self.judged is not None
        outcome = self.judged.outcome
        self.journal.write("step", **outcome.to_json())
        self.announce(f"{outcome.decision.value}: {outcome.reason}")
        code = STEP_EXIT[outcome.decision]
        if outcome.decision is StepDecision.PROMOTE:
            return self.finish("PROMOTED", "the new backend serves the model", code)
        held = outcome.decision is StepDecision.HOLD and self.judged.hint
        hint = f"; {self.judged.hint}" if held else ""
        self.switch_back()
        return self.finish(outcome.decision.value, f"{outcome.reason}{hint}", code)

    def _switch_to(self, text: str, api_base: str) -> None:
        """Write the config, restart the gateway, wait for the rollout and for the gateway
        to route the model to ``api_base``; then probe who answers."""
        self.gateway.write_config(text)
        self.gateway.restart(_now())
        if not self.req.apply:
            return
        said = self.gateway.wait_rolled_out(self.req.ready_timeout_s, self.req.poll_s)
        self.journal.write("rolled_out", object=self.gateway.deployment_where, said=said)
        deadline = time.monotonic() + self.req.ready_timeout_s
        while True:  # a Service may still send a request to a pod on its way out
            with contextlib.suppress(ClusterError):
                if same_base(routed_base(self.url, self.req.model, self.key), api_base):
                    break
            if time.monotonic() >= deadline:
                raise ClusterError(f"the gateway does not route {self.req.model} to {api_base} "
                                   f"after {self.req.ready_timeout_s:g} s")  # fmt: skip
            time.sleep(self.req.poll_s)
        served = probe(self.url, self.req.model, self.key)
        self.served = {"api_base": served.api_base, "fallbacks": served.fallbacks,
                       "status": served.status}  # fmt: skip
        self.journal.write("routed", api_base=api_base, probe=self.served)
        if not same_base(served.api_base, api_base) or served.fallbacks:
            self.announce(
                f"note: the gateway routes {self.req.model} to {api_base}, but a probe was "
                f"answered by {served.api_base} after {served.fallbacks} fallback(s) "
                f"(HTTP {served.status}): the new backend is not serving"
            )

    def switch_back(self) -> None:
        """The original config, byte for byte, and a restart; idempotent."""
        if not self.switched and self.req.apply:
            return
        self.announce(f"switching {self.req.model} back to {self.old_base}")
        self.gateway.write_config(self.original)
        self.gateway.restart(_now())
        if self.req.apply:
            said = self.gateway.wait_rolled_out(self.req.ready_timeout_s, self.req.poll_s)
            self.journal.write("switched_back", api_base=self.old_base, said=said)
        self.switched = False

    def interrupted(self) -> str:
        self.runner.stop()
        self.journal.write("interrupted", switched=self.switched)
        undone = f"{self.req.model} was switched back to {self.old_base}"
        allowed = self.req.rollback_on_interrupt
        return undo_on_interrupt(
            self, self.switch_back, self.switched, allowed, undone, str(self.gate_dir)
        )

    def finish(self, decision: str, reason: str, code: ExitCode = ExitCode.INVALID) -> ExitCode:
        self.decision, self.reason = decision, reason
        outcome = self.judged.outcome.to_json() if self.judged is not None else None
        document = {
            "schema": GATE_SCHEMA,
            "path": "litellm",
            "configmap": f"{self.req.namespace}/{self.req.configmap}",
            "deployment": f"{self.req.namespace}/{self.req.deployment}",
            "model": self.req.model,
            "applied": self.req.apply,
            "steps": [outcome] if outcome else [],
            "decision": decision,
            "reason": reason,
            "api_base_before": self.old_base,
            "api_base_new": self.req.new_api_base,
            "api_base_after": self.req.new_api_base if self.switched else self.old_base,
            "probe": self.served,
            "hint": self.judged.hint if self.judged is not None and decision == "HOLD" else None,
            "patches": self.gateway.sent,
        }
        write_atomic(self.gate_dir / "gate.json", json.dumps(document, indent=2) + "\n")
        self.journal.write("decision", decision=decision, reason=reason)
        return code


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
