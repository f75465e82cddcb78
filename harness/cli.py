"""The `harness` command line: it parses arguments and hands each command to its flow.

Each command imports its own flow module (``harness.flows.*``, or ``harness.sim.command``)
inside the command and nothing else of the harness, so `evaluate` and `slo rules` never load
Locust, and gevent patches the standard library only in the flows that drive load
(docs/architecture.md).
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from harness import __version__
from harness.errors import ExitCode, HarnessError, RunInterrupted, noted_run_dir

_err = Console(stderr=True, highlight=False)


def _announce(line: str) -> None:
    """A progress line for the user, on stderr so stdout stays the result."""
    _err.print(line, soft_wrap=True)


def _out() -> Console:
    """stdout; 120 columns when it is a pipe or CI log (rich would assume 80 and truncate)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class _Commands(click.Group):
    """Loads `sim` only when asked for: its server imports aiohttp (and ssl), which must
    not happen before `run` lets gevent patch the standard library."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "sim"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "sim":
            from harness.sim.command import sim

            return sim
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Performance testing and SLO verification for LLM serving."""


@cli.command("run")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_url", help="OpenAI base URL, e.g. http://host:8000/v1")
@click.option(
    "--model", help="model name to request (default: scenario, else the one the target lists)"
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="SLO policy file (default: the one the scenario names)",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("results"),
    show_default=True,
    help="folder that receives the run folder",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a scenario key, e.g. --set load.duration_s=30",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=0,
    show_default=True,
    help="load from N local Locust worker processes (0: from this process)",
)
@click.option(
    "--master-bind",
    metavar="HOST:PORT",
    help="wait here for --workers remote `harness worker`s instead of starting local ones",
)
@click.option("--no-report", is_flag=True, help="do not write the HTML report (report.html)")
def run_command(
    scenario: Path,
    target_url: str | None,
    model: str | None,
    policy_file: Path | None,
    out: Path,
    overrides: tuple[str, ...],
    workers: int,
    master_bind: str | None,
    no_report: bool,
) -> None:
    """Drive load, judge the run against the policy, write results/<run-id>/."""
    from harness.flows import run as flow

    req = flow.RunRequest(
        scenario_file=scenario,
        overrides=overrides,
        target_url=target_url,
        model=model,
        policy_file=policy_file,
        out=out,
        workers=workers,
        master_bind=master_bind,
        report=not no_report,
    )
    sys.exit(int(flow.run_and_report(req, _out(), _announce)))


@cli.command("gate")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--namespace", required=True, help="where the InferenceService or gateway runs")
@click.option("--isvc", help="KServe: the InferenceService to walk")
@click.option("--storage-uri", help="KServe: start the rollout with this new storageUri")
@click.option("--previous-storage-uri", help="KServe: what a rollback reverts to")
@click.option("--steps", default="10,50,100", show_default=True,
              help="KServe: traffic steps, in %")  # fmt: skip
@click.option("--canary-url", help="KServe: the canary's OpenAI base URL (default: latest- tag)")
@click.option("--baseline-url", help="KServe: the baseline's OpenAI base URL (default: prev- tag)")
@click.option("--openai-path", default="/openai/v1", show_default=True,
              help="KServe: appended to a tag URL to reach the OpenAI routes")  # fmt: skip
@click.option("--litellm-configmap", help="LiteLLM: the ConfigMap holding the gateway's config")
@click.option("--litellm-model", help="LiteLLM: the model_name whose api_base is switched")
@click.option("--new-api-base", help="LiteLLM: the new backend's OpenAI base URL")
@click.option("--litellm-deployment", default="litellm", show_default=True,
              help="LiteLLM: the gateway's Deployment, restarted after the switch")  # fmt: skip
@click.option("--litellm-config-key", default="config.yaml", show_default=True,
              help="LiteLLM: the ConfigMap key of the config")  # fmt: skip
@click.option("--gateway-url", help="LiteLLM: the gateway's OpenAI base URL (default: target.url)")
@click.option("--apply", is_flag=True, help="change the cluster (default: print the patches)")
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="default: in-cluster, then ~/.kube/config"
)
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="seconds a step or a restart may take to be in effect")  # fmt: skip
@click.option("--poll", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="seconds between status reads while waiting")  # fmt: skip
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True)  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--no-rollback-on-interrupt", is_flag=True,
              help="on Ctrl-C or SIGTERM, leave the canary where it is")  # fmt: skip
def gate_command(scenario: Path, **opt: Any) -> None:
    """Gate a new model version: walk a KServe canary through traffic steps (--isvc), or switch
    a LiteLLM gateway's backend blue-green (--litellm-configmap), judging against the policy and
    the baseline: promote (exit 0), hold (3), roll back or switch back (1)."""
    common: dict[str, Any] = {
        "scenario_file": scenario, "namespace": opt["namespace"], "apply": opt["apply"],
        "kubeconfig": opt["kubeconfig"], "ready_timeout_s": opt["ready_timeout"],
        "poll_s": opt["poll"], "policy_file": opt["policy_file"], "out": opt["out"],
        "overrides": opt["overrides"], "rollback_on_interrupt": not opt["no_rollback_on_interrupt"],
    }  # fmt: skip
    if (opt["isvc"] is None) == (opt["litellm_configmap"] is None):
        raise click.UsageError("give --isvc (KServe) or --litellm-configmap (LiteLLM), not both")
    if opt["litellm_configmap"] is not None:
        from harness.flows import bluegreen

        if opt["litellm_model"] is None or opt["new_api_base"] is None:
            raise click.UsageError("--litellm-configmap needs --litellm-model and --new-api-base")
        switch = bluegreen.BlueGreenRequest(
            configmap=opt["litellm_configmap"], model=opt["litellm_model"],
            new_api_base=opt["new_api_base"], deployment=opt["litellm_deployment"],
            config_key=opt["litellm_config_key"], gateway_url=opt["gateway_url"], **common,
        )  # fmt: skip
        sys.exit(int(bluegreen.switch_and_report(switch, _out(), _announce)))
    from harness.flows import gate as flow

    req = flow.GateRequest(
        isvc=opt["isvc"], steps=flow.parse_steps(opt["steps"]), storage_uri=opt["storage_uri"],
        previous_storage_uri=opt["previous_storage_uri"], canary_url=opt["canary_url"],
        baseline_url=opt["baseline_url"], openai_path=opt["openai_path"], **common,
    )  # fmt: skip
    sys.exit(int(flow.gate_and_report(req, _out(), _announce)))


@cli.command("capacity")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_url", help="OpenAI base URL (default: the scenario's target)")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True)  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--tolerance", type=click.FloatRange(0.005, 0.5), default=0.05, show_default=True,
              help="stop when the bracket is this close (a share of the load held)")  # fmt: skip
@click.option("--max-probes", type=click.IntRange(2, 100), default=12, show_default=True)
@click.option("--ceiling", type=click.FloatRange(min=0, min_open=True),
              help="highest load worth probing (rate, or users for closed loop)")  # fmt: skip
@click.option("--peak-rps", type=click.FloatRange(min=0, min_open=True),
              help="plan replicas for this peak request rate")  # fmt: skip
@click.option("--trough-rps", type=click.FloatRange(min=0), help="the quiet hours' rate")
@click.option("--headroom", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="share of a replica's capacity kept free at the peak")  # fmt: skip
@click.option("--gpu-hour-price", type=click.FloatRange(min=0),
              help="price of one GPU-hour: cost per 1 000 output tokens")  # fmt: skip
@click.option("--gpus-per-replica", type=click.IntRange(1, 64), default=1, show_default=True)
def capacity_command(scenario: Path, **opt: Any) -> None:
    """The highest load one replica holds with every critical objective passing: probes
    bracket it, then close the bracket; capacity.json, summary.md and a replica plan."""
    from harness.flows import capacity as flow

    req = flow.CapacityRequest(scenario_file=scenario, **opt)
    sys.exit(int(flow.capacity_and_report(req, _out(), _announce)))


@cli.command("tune")
@click.argument("study", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True,
              help="the study's folder is OUT/tune-NAME (kept to resume)")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a study key, e.g. launcher.model=...")  # fmt: skip
@click.option("--fresh", is_flag=True,
              help="start over: the journal of the settings measured so far is set "
              "aside")  # fmt: skip
@click.option("--apply", is_flag=True,
              help="kserve launcher: patch the InferenceService per setting (default: only "
              "print the patches)")  # fmt: skip
def tune_command(study: Path, **opt: Any) -> None:
    """Measure vLLM engine settings one at a time (a fixed load or a capacity search each):
    every setting's throughput, latency and verdict, the Pareto front, and the best setting
    that passes the policy as a `vllm serve` line and an InferenceService patch. Rerunning an
    interrupted study measures only what is left."""
    from harness.flows import tune as flow

    req = flow.TuneRequest(study_file=study, **opt)
    sys.exit(int(flow.tune_and_report(req, _out(), _announce)))


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="judge against this policy instead of the one stored with the run",
)
@click.option(
    "--baseline",
    "baseline_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="also compare with this baseline run (writes comparison.json and comparison.md)",
)
def evaluate_command(run_dir: Path, policy_file: Path | None, baseline_dir: Path | None) -> None:
    """Re-judge a stored run (rewrites verdict.json, summary.md, junit.xml), alone or as a
    canary against a baseline run: then ROLLBACK exits 1 and HOLD 3."""
    from harness.flows import evaluate as flow

    sys.exit(int(flow.evaluate_and_report(run_dir, policy_file, baseline_dir, _out(), _announce)))


@cli.command("report")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="write the HTML here (default: PATH/report.html)")  # fmt: skip
def report_command(path: Path, out: Path | None) -> None:
    """One self-contained HTML report (opens offline) of a run folder, a canary comparison, a
    capacity search or a tuning study: verdict tables and interactive latency, time-series
    and load plots."""
    from harness.flows import report as flow

    sys.exit(int(flow.report_and_print(path, out, _out())))


@cli.command("ui")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_url", help="OpenAI base URL, e.g. http://host:8000/v1")
@click.option(
    "--model", help="model name to request (default: scenario, else the one the target lists)"
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True, help="folder that receives the run folder")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a scenario key")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="address of the web UI")
@click.option("--port", type=int, default=8089, show_default=True, help="port of the web UI")
def ui_command(
    scenario: Path,
    target_url: str | None,
    model: str | None,
    out: Path,
    overrides: tuple[str, ...],
    host: str,
    port: int,
) -> None:
    """Locust's web UI on the scenario's target and workload (load set by hand).

    Every request is recorded raw in a run folder; judge it with `harness evaluate`."""
    from harness.flows import ui as flow

    req = flow.RunRequest(scenario_file=scenario, overrides=overrides, target_url=target_url,
                          model=model, out=out)  # fmt: skip
    run_dir, count = flow.explore(req, host, port, _announce)
    _err.print(f"{count} records in {run_dir}; judge them with: harness evaluate {run_dir}")


@cli.command("worker")
@click.option("--master", required=True, metavar="HOST:PORT", help="the master to join")
def worker_command(master: str) -> None:
    """Join a `harness run --workers N --master-bind HOST:PORT` master and send its load."""
    from harness.flows import worker as flow

    flow.join_master(master)


@cli.command("webhook")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="port to listen on (0: a free one, logged)")  # fmt: skip
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="SLO policy file (default: the one each scenario names)")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True, help="folder that receives a folder per call")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a scenario key for every run")  # fmt: skip
@click.option("--max-duration", type=click.FloatRange(min=1), metavar="S",
              help="cap each run's load.duration_s at S seconds")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=15), default=60.0, show_default=True,
              metavar="S", help="answer every call within S seconds; set the Canary "
              "webhook's timeout above it")  # fmt: skip
@click.option("--scenarios", "scenarios_dir", type=click.Path(path_type=Path, file_okay=False),
              help="folder of scenario files a call may pick by name")  # fmt: skip
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="PATTERN",
              help="hosts a call may target, e.g. '*.serving.svc.cluster.local' (required "
              "when the API key is set: the run sends it there)")  # fmt: skip
def webhook_command(
    scenario: Path,
    host: str,
    port: int,
    policy_file: Path | None,
    out: Path,
    overrides: tuple[str, ...],
    max_duration: float | None,
    timeout: float,
    scenarios_dir: Path | None,
    allow_hosts: tuple[str, ...],
) -> None:
    """Serve the scenario as a Flagger pre-rollout or rollout webhook: each POST runs it
    against metadata.url and answers 200 on PASS or WARN, 4xx with the reason otherwise."""
    from harness.flows import webhook as flow

    req = flow.WebhookRequest(
        scenario_file=scenario, host=host, port=port, policy_file=policy_file, out=out,
        overrides=overrides, max_duration_s=max_duration, timeout_s=timeout,
        scenarios_dir=scenarios_dir, allow_hosts=allow_hosts,
    )  # fmt: skip
    sys.exit(int(flow.serve_webhook(req, _announce)))


@cli.group("slo")
def slo_group() -> None:
    """SLO policy tools."""


@slo_group.command("rules")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="write the rule file here (default: stdout)")  # fmt: skip
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="label matcher for every series; KEY=~REGEX for a regex")  # fmt: skip
@click.option("--window", default="5m", show_default=True, help="range of rates and stats")
@click.option("--for", "for_", default="5m", show_default=True, help="how long a breach lasts")
def slo_rules_command(
    policy_file: Path, out: Path | None, selectors: tuple[str, ...], window: str, for_: str
) -> None:
    """Prometheus alerting rules for the policy's alert tiers, over vLLM's metrics."""
    from harness.flows import rules as flow

    text = flow.rules_text(policy_file, selectors, window, for_)
    if out is None:
        click.echo(text, nl=False)
    else:
        flow.write_rules(out, text)


_FAIL_AT = click.Choice(["alert", "target"])
_CANARY_SELECTOR = "label matcher beside the canary's namespace and pod; KEY=~REGEX for a regex"


@slo_group.command("argo")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="write the YAML here (default: stdout)")  # fmt: skip
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help=_CANARY_SELECTOR)  # fmt: skip
@click.option("--window", default="5m", show_default=True,
              help="range of rates and stats, and the interval between measurements")  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=3, show_default=True,
              help="measurements per objective")  # fmt: skip
@click.option("--prometheus-url", help="the Prometheus Argo queries (default: "
              "http://prometheus.monitoring.svc.cluster.local:9090)")  # fmt: skip
@click.option("--job-image", help="the harness image (deploy/Dockerfile) the Job check runs "
              "(default: deploy/k8s's REGISTRY/llm-slo-harness:0.1.0)")  # fmt: skip
@click.option("--scenario", help="the scenario file the Job runs, a path inside the image "
              "(default: the image's scenarios/canary-gate.yaml)")  # fmt: skip
@click.option("--fail-at", type=_FAIL_AT, default="alert", show_default=True,
              help="fail a check past the alert tier (as the gate) or past the target")  # fmt: skip
def slo_argo_command(
    policy_file: Path,
    out: Path | None,
    selectors: tuple[str, ...],
    window: str,
    count: int,
    prometheus_url: str | None,
    job_image: str | None,
    scenario: str | None,
    fail_at: str,
) -> None:
    """Argo Rollouts AnalysisTemplates from the policy: a Job running `harness run` against
    the canary, and Prometheus checks of its objectives."""
    from harness.flows import argo as flow

    text = flow.argo_text(
        policy_file, selectors, window=window, count=count, prometheus=prometheus_url,
        image=job_image, scenario=scenario, fail_at="target" if fail_at == "target" else "alert",
    )  # fmt: skip
    if out is None:
        click.echo(text, nl=False)
    else:
        flow.write_rules(out, text)


@slo_group.command("flagger")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_name", required=True,
              help="the Deployment the Canary rolls out (its name is the Canary's)")  # fmt: skip
@click.option("--namespace", required=True, help="the Canary's and the templates' namespace")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="write the YAML here (default: stdout)")  # fmt: skip
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help=_CANARY_SELECTOR)  # fmt: skip
@click.option("--window", default="5m", show_default=True,
              help="each metric's interval: the range of its rates and stats")  # fmt: skip
@click.option("--prometheus-url", help="the Prometheus Flagger queries (default: "
              "http://prometheus.monitoring.svc.cluster.local:9090)")  # fmt: skip
@click.option("--port", type=int, default=8000, show_default=True,
              help="the Service port of the target (vLLM's 8000)")  # fmt: skip
@click.option("--scenario", help="the scenario `harness webhook` runs: a name among its "
              "--scenarios, without .yaml (default: its own)")  # fmt: skip
@click.option("--webhook-timeout", default="70s", show_default=True,
              help="how long Flagger waits for the webhook: above its --timeout")  # fmt: skip
@click.option("--fail-at", type=_FAIL_AT, default="alert", show_default=True,
              help="fail a check past the alert tier (as the gate) or past the target")  # fmt: skip
def slo_flagger_command(
    policy_file: Path,
    target_name: str,
    namespace: str,
    out: Path | None,
    selectors: tuple[str, ...],
    window: str,
    prometheus_url: str | None,
    port: int,
    scenario: str | None,
    webhook_timeout: str,
    fail_at: str,
) -> None:
    """Flagger MetricTemplates and a Canary analysis from the policy, with a pre-rollout
    webhook to `harness webhook`."""
    from harness.flows import flagger as flow

    text = flow.flagger_text(
        policy_file, selectors, target=target_name, namespace=namespace, window=window,
        prometheus=prometheus_url, port=port, scenario=scenario, webhook_timeout=webhook_timeout,
        fail_at="target" if fail_at == "target" else "alert",
    )  # fmt: skip
    if out is None:
        click.echo(text, nl=False)
    else:
        flow.write_rules(out, text)


def main(argv: list[str] | None = None) -> None:
    """Entry point: HarnessErrors become one line on stderr and their exit code."""
    try:
        cli.main(args=argv, prog_name="harness", standalone_mode=False)
    except RunInterrupted as exc:
        _err.print(f"interrupted: {exc}", soft_wrap=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except HarnessError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        _err.print("aborted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt:
        _err.print("interrupted: records written so far are kept in the run folder")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # a bug: say so in one line, keep the traceback for the report
        where = _save_traceback()
        _err.print(
            f"internal error (a bug in the harness, not a verdict): {type(exc).__name__}: "
            f"{escape(str(exc)[:300])}; traceback in {where}",
            soft_wrap=True,
        )
        sys.exit(int(ExitCode.INTERNAL))


def _save_traceback() -> str:
    """Write the current exception's traceback into the run folder, or a temporary file when
    there is none yet; returns where."""
    text = traceback.format_exc()
    run_dir = noted_run_dir()
    try:
        if run_dir is not None and run_dir.is_dir():
            path = run_dir / "traceback.txt"
            path.write_text(text, encoding="utf-8")
            return str(path)
    except OSError:
        pass
    with tempfile.NamedTemporaryFile("w", prefix="harness-traceback-", suffix=".txt",
                                     delete=False, encoding="utf-8") as fh:  # fmt: skip
        fh.write(text)
    return fh.name
