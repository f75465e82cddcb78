"""`harness webhook SCENARIO`: the scenario as a Flagger pre-rollout or rollout webhook.

Flagger POSTs its CanaryWebhookPayload ({name, namespace, phase, checksum, metadata}) and
takes any status above 202 as a failed check, quoting the body in its events. Each call runs
the scenario against ``metadata.url`` as a `harness run` process (so this server never loads
gevent or Locust) and answers one line: the decision, the objectives behind it, the run
folder. Verdicts other than PASS/WARN are 4xx on purpose: Flagger's HTTP client
(go-retryablehttp) retries 429 and 5xx when the webhook sets `retries`, re-running the load,
and with or without retries replaces their body with "giving up after N attempt(s)".

A request chooses only the target URL (a host --allow-host names: the run sends it the API
key) and, with --scenarios, one of the scenario files found there at start-up: never a path,
never an override. Every answer comes within --timeout: the
load is capped by --max-duration, checked to fit at start-up, and a run still going at the
deadline is stopped and answered 424. docs/webhook.md has the status table.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from rich.markup import escape

from harness.errors import ExitCode, HarnessError, UsageError
from harness.judge.verdict import Decision
from harness.records.run_dir import new_run_dir
from harness.spec.policy import load_policy
from harness.spec.scenario import Scenario, check_base_url, load_scenario, policy_path

#: Largest request body read; Flagger's payload is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
#: Seconds kept at the end of --timeout to stop a late run, read its verdict and answer.
ANSWER_GRACE_S = 5.0
#: Seconds a run takes beyond its load: the process starts, checks the target, judges.
RUN_OVERHEAD_S = 5.0
#: The metadata keys a request may set; any other is refused, so a typo is not ignored.
METADATA_KEYS = ("url", "scenario")
#: The status each decision answers (Flagger: 200-202 advance, anything else halts).
DECISION_STATUS = {
    Decision.PASS: 200,
    Decision.WARN: 200,
    Decision.FAIL: 412,
    Decision.INCONCLUSIVE: 422,
    Decision.INVALID: 424,
}

# A Kubernetes object name (DNS-1123 subdomain): also safe in a folder name.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TOKEN = re.compile(r"^[A-Za-z0-9._-]{0,80}$")  # phase and checksum: logged as they come
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_URL_EXAMPLE = "e.g. http://podinfo-canary.test:8000/v1"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What the user asked for on the command line."""

    scenario_file: Path
    host: str = "0.0.0.0"
    port: int = 8080
    policy_file: Path | None = None
    out: Path = Path("results")
    overrides: tuple[str, ...] = ()
    max_duration_s: float | None = None
    timeout_s: float = 60.0
    scenarios_dir: Path | None = None
    allow_hosts: tuple[str, ...] = ()  # glob patterns; () allows any host when no key is set


@dataclass(frozen=True, slots=True)
class Call:
    """One Flagger call, checked: the canary it is for and what to run against it."""

    name: str
    namespace: str
    phase: str
    checksum: str
    url: str
    scenario: str | None = None  # a name among --scenarios; None: the default scenario

    @property
    def canary(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str  # one line, sent as text/plain and logged


class BadCall(ValueError):
    """A request refused with 400; its message is the one-line answer."""


def parse_call(body: bytes, choices: Mapping[str, Path], allow_hosts: tuple[str, ...] = ()) -> Call:
    """Flagger's payload -> a Call, or BadCall naming the one thing wrong with it.

    Unknown top-level keys are ignored (a later Flagger may add some); unknown metadata keys
    are refused (they are the user's configuration, and a misspelt one would be ignored)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCall(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadCall("the body is not a JSON object: expected Flagger's "
                      "{name, namespace, phase, checksum, metadata}")  # fmt: skip
    name, namespace = doc.get("name"), doc.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise BadCall("name and namespace are required: the canary's, as Flagger sends them")
    if not _K8S_NAME.match(name) or not _K8S_NAME.match(namespace):
        raise BadCall("name and namespace must be Kubernetes object names")
    phase, checksum = doc.get("phase", ""), doc.get("checksum", "")
    if not all(isinstance(v, str) and _TOKEN.match(v) for v in (phase, checksum)):
        raise BadCall("phase and checksum must be short strings of letters and digits")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadCall("metadata must map names to strings, as Flagger's does")
    unknown = sorted(re.sub(r"[^\w.-]", "?", k)[:40] for k in metadata if k not in METADATA_KEYS)
    if unknown:
        raise BadCall(f"unknown metadata key(s) {', '.join(unknown)}: only url and scenario "
                      "are read")  # fmt: skip
    if "url" not in metadata:
        raise BadCall(f"metadata.url is required: the canary's OpenAI base URL, {_URL_EXAMPLE}")
    url = _checked_url(metadata["url"], allow_hosts)
    scenario = metadata.get("scenario")
    if scenario is not None:
        if not choices:
            raise BadCall("metadata.scenario is refused: this webhook serves one scenario "
                          "(start it with --scenarios DIR to offer a choice)")  # fmt: skip
        if not _FILE_NAME.match(scenario) or scenario not in choices:
            raise BadCall(f"metadata.scenario must be one of: {', '.join(_names(choices))}")
    return Call(name, namespace, phase, checksum, url, scenario)


def _checked_url(url: str, allow_hosts: tuple[str, ...]) -> str:
    """The target URL, refused unless it is a plain http(s) base URL (no credentials, no
    query: it is logged and answered) on an allowed host (the run sends it the API key)."""
    if len(url) > 2048 or not url.isascii() or not url.isprintable() or " " in url:
        raise BadCall("metadata.url must be printable ASCII without spaces, at most 2048 long")
    try:
        checked = check_base_url(url)
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadCall(f"metadata.url: {exc}") from None
    if parts.username is not None:
        raise BadCall("metadata.url must not carry credentials: the run reads its API key "
                      "from its environment")  # fmt: skip
    host = (parts.hostname or "").lower()
    if allow_hosts and not any(fnmatch.fnmatchcase(host, p.lower()) for p in allow_hosts):
        raise BadCall(f"metadata.url: host {host} is not one --allow-host names")
    return checked


def _names(choices: Mapping[str, Path]) -> list[str]:
    """The scenario names a request may give: the files' stems."""
    return sorted({path.stem for path in choices.values()})


def answer_from_run(call_dir: Path, code: int | None, cut_at_s: float | None) -> Answer:
    """The answer for a finished (or, with ``cut_at_s``, stopped) run in ``call_dir``: from
    its verdict.json when there is one, else from its exit code and last error line."""
    runs = [p for p in call_dir.iterdir() if p.is_dir()] if call_dir.is_dir() else []
    run_dir = runs[0] if len(runs) == 1 else call_dir
    where = f"run: {run_dir}"
    verdict = _read_verdict(run_dir)
    if cut_at_s is not None:
        if verdict is not None and verdict["decision"] == Decision.FAIL:
            return Answer(412, f"FAIL (stopped at the {cut_at_s:g} s deadline): "
                               f"{_objectives(verdict, 'FAIL')}; {where}")  # fmt: skip
        measured = f"; what it measured: {verdict['decision']}" if verdict else ""
        return Answer(424, f"the run did not finish within {cut_at_s:g} s and was stopped"
                           f"{measured}; {where}")  # fmt: skip
    if verdict is None:
        said = _last_error(call_dir / "run.log")
        if code in (ExitCode.USAGE, ExitCode.INVALID):
            return Answer(424, f"the run ended without a verdict (exit {code}): {said}; {where}")
        return Answer(500, f"the run failed (exit {code}) without a verdict: {said}; {where}")
    decision = Decision(verdict["decision"])
    return Answer(DECISION_STATUS[decision], f"{decision}: {_why(verdict)}; {where}")


def _read_verdict(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((run_dir / "verdict.json").read_text(encoding="utf-8"))
        Decision(doc["decision"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def _why(verdict: Mapping[str, Any]) -> str:
    """The objectives behind a decision, with the run's request and error counts."""
    decision = Decision(verdict["decision"])
    summary = verdict.get("summary") or {}
    counts = f" ({summary.get('requests')} requests, {summary.get('errors')} errors)"
    if decision is Decision.INVALID:
        return f"{verdict.get('invalid_reason') or 'the run cannot be trusted'}{counts}"
    if decision is Decision.PASS:
        return f"{len(verdict.get('objectives') or [])} objectives met{counts}"
    return _objectives(verdict, decision.value) + counts


def _objectives(verdict: Mapping[str, Any], which: str) -> str:
    found = [o for o in verdict.get("objectives") or [] if o.get("verdict") == which]
    return "; ".join(f"{o.get('name')}: {o.get('reason')}" for o in found) or "no objective"


def _last_error(log: Path) -> str:
    """The run's last `error:` line (the harness's own messages never hold the API key)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"no log at {log}"
    errors = [line.strip() for line in lines if line.lstrip().startswith(("error:", "internal"))]
    return errors[-1][:300] if errors else f"see {log}"


class Webhook:
    """The server's state: the scenarios on offer, the canaries being run, their processes."""

    def __init__(
        self,
        req: WebhookRequest,
        scenarios: Mapping[str | None, tuple[Path, Path, tuple[str, ...]]],
        announce: Callable[[str], None],
    ) -> None:
        self.req = req
        self.scenarios = scenarios  # name -> (file, policy, --set items); None: the default
        self.choices = {k: v[0] for k, v in scenarios.items() if k is not None}
        self.out = req.out.resolve()
        self._announce = announce
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()

    @classmethod
    def prepare(cls, req: WebhookRequest, announce: Callable[[str], None]) -> Webhook:
        """Load every scenario and policy on offer now, so a bad file or a run that cannot
        answer within --timeout stops the start (exit 2), not a rollout."""
        files: dict[str | None, Path] = {None: req.scenario_file}
        if req.scenarios_dir is not None:
            if not req.scenarios_dir.is_dir():
                raise UsageError(f"--scenarios {req.scenarios_dir}: not a folder")
            for path in sorted(req.scenarios_dir.iterdir()):
                if path.suffix in (".yaml", ".yml") and _FILE_NAME.match(path.name):
                    files[path.stem] = files[path.name] = path
        unique = dict.fromkeys(files.values())  # each file once, in order
        loaded = {path: cls._prepared(req, path.resolve()) for path in unique}
        return cls(req, {key: loaded[path] for key, path in files.items()}, announce)

    @staticmethod
    def _prepared(req: WebhookRequest, path: Path) -> tuple[Path, Path, tuple[str, ...]]:
        scenario = load_scenario(path, list(req.overrides))
        sets = (*req.overrides, *_duration_cap(scenario, req.max_duration_s))
        scenario = load_scenario(path, list(sets))
        policy = (req.policy_file or policy_path(path, scenario)).resolve()
        load_policy(policy)
        key_env = scenario.target.api_key_env
        if os.environ.get(key_env) and not req.allow_hosts:
            raise UsageError(
                f"{path}: ${key_env} is set, and the run sends it to whichever URL a call names: "
                "give --allow-host for the canaries' hosts (e.g. '*.serving.svc.cluster.local')"
            )
        load = scenario.load
        budget = req.timeout_s - ANSWER_GRACE_S - RUN_OVERHEAD_S
        if load.total_s > budget:
            raise UsageError(
                f"{path}: its load lasts {load.total_s:g} s (warm-up and cool-down included); "
                f"with {RUN_OVERHEAD_S + ANSWER_GRACE_S:g} s to start, judge and answer it cannot "
                f"be answered within --timeout {req.timeout_s:g} s: lower --max-duration or "
                "raise --timeout (and the Canary webhook's timeout above it)"
            )
        return path, policy, sets

    def log(self, line: str) -> None:
        self._announce(escape(line))

    def handle(self, body: bytes, started: float) -> Answer:
        """One POST: check it, refuse a second run for the same canary, run, answer."""
        try:
            call = parse_call(body, self.choices, self.req.allow_hosts)
        except BadCall as exc:
            return Answer(400, str(exc))
        with self._lock:
            if call.canary in self._busy:
                return Answer(409, f"a run for {call.canary} is already going: this call is "
                                   "refused, not queued")  # fmt: skip
            self._busy.add(call.canary)
        try:
            return self._run(call, started)
        except HarnessError as exc:
            return Answer(500, f"the run could not start: {exc}")
        finally:
            with self._lock:
                self._busy.discard(call.canary)

    def _run(self, call: Call, started: float) -> Answer:
        scenario_file, policy, sets = self.scenarios[call.scenario]
        _, call_dir = new_run_dir(self.out, f"webhook-{call.namespace}.{call.name}")
        (call_dir / "request.json").write_text(json.dumps({
            "name": call.name, "namespace": call.namespace, "phase": call.phase,
            "checksum": call.checksum, "url": call.url, "scenario": call.scenario,
        }, indent=2) + "\n", encoding="utf-8")  # fmt: skip
        self.log(f"webhook: {call.canary} ({call.phase or 'no phase'}, checksum "
                 f"{call.checksum or '-'}): {scenario_file.name} against {call.url}; "
                 f"folder {call_dir}")  # fmt: skip
        # No HTML report: the answer is due within the timeout, and nobody reads it per call.
        args = [sys.executable, "-m", "harness", "run", str(scenario_file), "--target",
                call.url, "--policy", str(policy), "--out", str(call_dir),
                "--no-report"]  # fmt: skip
        for item in sets:
            args += ["--set", item]
        with (call_dir / "run.log").open("wb") as log:
            # Its own session: a stop signal for the server does not cut the run mid-write;
            # the server stops each run's whole group itself.
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        with self._lock:
            self._procs.add(proc)
        try:
            code, cut = self._wait(proc, started)
        finally:
            with self._lock:
                self._procs.discard(proc)
        return answer_from_run(call_dir, code, self.req.timeout_s if cut else None)

    def _wait(self, proc: subprocess.Popen[bytes], started: float) -> tuple[int, bool]:
        """The run's exit code, and whether the deadline stopped it: SIGTERM leaves it time
        to judge what it measured, SIGKILL one second before the answer is due."""
        budget = self.req.timeout_s - ANSWER_GRACE_S - (time.monotonic() - started)
        try:
            return proc.wait(timeout=max(budget, 0.0)), False
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=ANSWER_GRACE_S - 1.0), True
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            return proc.wait(), True

    def stop_all(self) -> None:
        """Stop every run still going (the server is stopping), each as the deadline would."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=ANSWER_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def _duration_cap(scenario: Scenario, max_duration_s: float | None) -> tuple[str, ...]:
    """The --set item that caps the measured window at --max-duration (stages are kept)."""
    load = scenario.load
    if max_duration_s is None or load.stages is not None or load.duration_s is None:
        return ()
    return (f"load.duration_s={max_duration_s:g}",) if load.duration_s > max_duration_s else ()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class _Handler(BaseHTTPRequestHandler):
    server_version = "harness-webhook"
    timeout = 30  # seconds a client may take to send its request

    @property
    def hook(self) -> Webhook:
        server = self.server
        assert isinstance(server, _Server)
        return server.hook

    def do_POST(self) -> None:
        started = time.monotonic()
        if self.path.split("?", 1)[0] != "/":
            self._answer(Answer(404, "POST Flagger's payload to /"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(Answer(400, "a Content-Length header is required"))
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(Answer(413, f"the body is over {MAX_BODY_BYTES // 1024} KiB"))
            return
        body = self.rfile.read(length)
        try:
            answer = self.hook.handle(body, started)
        except Exception as exc:  # a bug: answered and logged, the server keeps serving
            answer = Answer(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")
        self._answer(answer)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(Answer(200, "ok"), quiet=True)
        else:
            self._refuse_method()

    def _refuse_method(self) -> None:
        self._answer(Answer(405, f"{self.command} is not served: Flagger POSTs its payload to /"))

    do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _answer(self, answer: Answer, quiet: bool = False) -> None:
        data = (answer.text + "\n").encode("utf-8")
        if not quiet:
            self.hook.log(f"webhook: {self.command} {self.path[:100]} -> {answer.status} "
                          f"{answer.text}")  # fmt: skip
        try:
            self.send_response(answer.status)
            if answer.status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # Flagger gave up (its timeout): the answer is in the log only
            self.hook.log(f"webhook: the client left before the {answer.status} answer")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Each answered request is logged once, by _answer, with its reason."""

    def log_message(self, format: str, *args: Any) -> None:
        """The server's own lines (a malformed request line, a client too slow) in our log."""
        self.hook.log(f"webhook: {self.address_string()}: {format % args}"[:300])


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a run in flight does not hold the process at exit

    def __init__(self, address: tuple[str, int], hook: Webhook) -> None:
        self.hook = hook
        super().__init__(address, _Handler)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_webhook(req: WebhookRequest, announce: Callable[[str], None]) -> ExitCode:
    """The command: serve until SIGINT or SIGTERM, then stop the runs still going."""
    hook = Webhook.prepare(req, announce)
    try:
        server = _Server((req.host, req.port), hook)
    except OSError as exc:
        raise UsageError(f"cannot listen on {req.host}:{req.port}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    offered = f"; metadata.scenario: {', '.join(_names(hook.choices))}" if hook.choices else ""
    hook.log(f"webhook: listening on http://{host!s}:{port}/ ({req.scenario_file.name}, answers "
             f"within {req.timeout_s:g} s; results in {hook.out}{offered})")  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        hook.log("webhook: stopping: runs still going are stopped, each keeps its folder")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        hook.stop_all()
    return ExitCode.PASS
