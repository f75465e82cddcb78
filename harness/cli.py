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
def run_command(
    scenario: Path,
    target_url: str | None,
    model: str | None,
    policy_file: Path | None,
    out: Path,
    overrides: tuple[str, ...],
    workers: int,
    master_bind: str | None,
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
    )
    sys.exit(int(flow.run_and_report(req, _out(), _announce)))


@cli.command("gate")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--isvc", required=True, help="the InferenceService to walk")
@click.option("--namespace", required=True, help="its namespace")
@click.option("--storage-uri", help="start the rollout: the new model's storageUri")
@click.option("--previous-storage-uri", help="what a rollback reverts to (default: annotation)")
@click.option("--steps", default="10,50,100", show_default=True, help="traffic steps, in %")
@click.option("--apply", is_flag=True, help="change the cluster (default: print the patches)")
@click.option("--canary-url", help="the canary's OpenAI base URL (default: its latest- tag URL)")
@click.option("--baseline-url", help="the baseline's OpenAI base URL (default: its prev- tag URL)")
@click.option("--openai-path", default="/openai/v1", show_default=True,
              help="appended to a tag URL to reach the OpenAI routes")  # fmt: skip
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="default: in-cluster, then ~/.kube/config"
)
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="seconds a step may take to be in effect")  # fmt: skip
@click.option("--poll", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="seconds between status reads while waiting")  # fmt: skip
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True)  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--no-rollback-on-interrupt", is_flag=True,
              help="on Ctrl-C or SIGTERM, leave the canary at its weight")  # fmt: skip
def gate_command(
    scenario: Path,
    isvc: str,
    namespace: str,
    storage_uri: str | None,
    previous_storage_uri: str | None,
    steps: str,
    apply: bool,
    canary_url: str | None,
    baseline_url: str | None,
    openai_path: str,
    kubeconfig: str | None,
    ready_timeout: float,
    poll: float,
    policy_file: Path | None,
    out: Path,
    overrides: tuple[str, ...],
    no_rollback_on_interrupt: bool,
) -> None:
    """Walk a KServe canary through traffic steps, judging each against the policy and the
    baseline: promote, hold (exit 3) or roll back (exit 1)."""
    from harness.flows import gate as flow

    req = flow.GateRequest(
        scenario_file=scenario, isvc=isvc, namespace=namespace, steps=flow.parse_steps(steps),
        storage_uri=storage_uri, previous_storage_uri=previous_storage_uri, apply=apply,
        canary_url=canary_url, baseline_url=baseline_url, openai_path=openai_path,
        kubeconfig=kubeconfig, ready_timeout_s=ready_timeout, poll_s=poll,
        policy_file=policy_file, out=out, overrides=overrides,
        rollback_on_interrupt=not no_rollback_on_interrupt,
    )  # fmt: skip
    sys.exit(int(flow.gate_and_report(req, _out(), _announce)))


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

    sys.exit(int(flow.evaluate_and_report(run_dir, policy_file, baseline_dir, _out())))


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
