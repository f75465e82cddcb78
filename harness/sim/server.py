"""The HTTP face of the simulator: vLLM's OpenAI-compatible routes on aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from harness.sim.engine import Engine
from harness.sim.faults import FaultInjector, FaultPlan
from harness.sim.metrics import SimMetrics
from harness.sim.protocol import (
    ApiKind,
    BadRequestError,
    ChatRequest,
    CompletionRequest,
    Reply,
    TokenizeRequest,
    error_body,
    output_text,
    parse_request,
)
from harness.sim.scheduler import FinishReason, RequestTooLongError, effective_max_tokens
from harness.sim.settings import SimSettings
from harness.sim.streams import BufferedSink, SseSink, TokenSink

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT_S = 2.0
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
LISTEN_BACKLOG = 2048
"""Large enough that hundreds of clients connecting at once are not dropped and retried."""


@dataclass(slots=True)
class _State:
    settings: SimSettings
    metrics: SimMetrics
    faults: FaultInjector
    engine: Engine | None = None
    salts: itertools.count[int] = field(default_factory=itertools.count)

    def running_engine(self) -> Engine:
        if self.engine is None:
            raise web.HTTPServiceUnavailable(reason="engine not started")
        return self.engine


STATE = web.AppKey("sim_state", _State)


def _json_error(status: int, message: str, err_type: str) -> web.Response:
    return web.json_response(error_body(message, err_type, status), status=status)


def create_app(settings: SimSettings) -> web.Application:
    """The aiohttp application; its engine starts and stops with the app."""
    metrics = SimMetrics(settings.model, settings.max_model_len)
    state = _State(settings, metrics, FaultInjector(settings))
    app = web.Application(middlewares=[_observe, _authenticate])
    app[STATE] = state

    async def start_engine(app: web.Application) -> None:
        state.engine = Engine(settings, state.metrics, asyncio.get_running_loop())

    async def stop_engine(app: web.Application) -> None:
        if state.engine is not None:
            state.engine.close()

    app.on_startup.append(start_engine)
    app.on_shutdown.append(stop_engine)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/tokenize", _tokenize)
    return app


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request in http_requests_total, errors included."""
    metrics = request.app[STATE].metrics
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.observe_http(request.path, request.method, exc.status)
        raise
    except Exception:
        metrics.observe_http(request.path, request.method, 500)
        raise
    metrics.observe_http(request.path, request.method, response.status)
    return response


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require the bearer key on /v1 routes when one is set, as ``vllm serve --api-key``."""
    key = request.app[STATE].settings.api_key
    if key is not None and request.path.startswith("/v1"):
        expected = ("Bearer " + key.get_secret_value()).encode()
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response({"error": "Unauthorized"}, status=401)
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    return web.Response()


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _models(request: web.Request) -> web.Response:
    s = request.app[STATE].settings
    card = {
        "id": s.model,
        "object": "model",
        "created": 0,
        "owned_by": "vllm",
        "root": s.model,
        "parent": None,
        "max_model_len": s.max_model_len,
    }
    return web.json_response({"object": "list", "data": [card]})


async def _tokenize(request: web.Request) -> web.Response:
    """vLLM's /tokenize, counting as the usage of a request does (harness.sim.text); the ids
    are stand-ins, one per token."""
    try:
        req = TokenizeRequest.model_validate_json(await request.read())
        count = req.count()
    except (ValidationError, BadRequestError) as exc:
        return _json_error(400, str(exc).splitlines()[0], "BadRequestError")
    s = request.app[STATE].settings
    return web.json_response(
        {"count": count, "max_model_len": s.max_model_len, "tokens": list(range(count))}
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def _generate(request: web.Request, kind: ApiKind) -> web.StreamResponse:
    """Validate like vLLM, apply the request's faults, then run it on the engine."""
    state = request.app[STATE]
    s = state.settings
    engine = state.running_engine()
    arrival = asyncio.get_running_loop().time()
    try:
        req = parse_request(kind, await request.read())
        prompt_tokens = req.prompt_tokens()
        if req.model is not None and req.model != s.model:
            return _json_error(404, f"The model `{req.model}` does not exist.", "NotFoundError")
        max_tokens = effective_max_tokens(
            prompt_tokens, req.requested_max_tokens, s.max_model_len, s.default_max_tokens
        )
    except (BadRequestError, RequestTooLongError) as exc:
        return _json_error(400, str(exc), "BadRequestError")

    plan = state.faults.draw()
    if plan.rate_limited:
        response = _json_error(429, "Rate limit exceeded (injected fault).", "RateLimitError")
        response.headers["Retry-After"] = str(s.retry_after_seconds)
        return response
    if plan.error:
        return _json_error(500, "Internal server error (injected fault).", "InternalServerError")

    job = _Job(
        engine=engine,
        settings=s,
        reply=Reply.new(kind, s.model),
        req=req,
        plan=plan,
        salt=next(state.salts),
        arrival=arrival,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stop_after=engine.draw_stop(max_tokens, req.ignore_eos),
    )
    if req.stream:
        return await job.stream(request)
    return await job.complete(request)


@dataclass(slots=True)
class _Job:
    """One accepted generation request on its way through the engine."""

    engine: Engine
    settings: SimSettings
    reply: Reply
    req: ChatRequest | CompletionRequest
    plan: FaultPlan
    salt: int
    arrival: float
    prompt_tokens: int
    max_tokens: int
    stop_after: int | None

    @property
    def planned_tokens(self) -> int:
        return self.stop_after if self.stop_after is not None else self.max_tokens

    async def _run(self, sink: TokenSink) -> FinishReason:
        seq_id = self.engine.submit(
            self.prompt_tokens, self.max_tokens, self.stop_after, sink, self.arrival
        )
        try:
            return await sink.done
        finally:
            self.engine.abort(seq_id)  # a no-op once finished; frees the slot otherwise

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)  # sends the headers: frames go straight after
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        loop = asyncio.get_running_loop()
        sink = SseSink(
            transport,
            self.reply.frames(),
            self.salt,
            self.plan,
            self.planned_tokens,
            self.prompt_tokens,
            self.req.include_usage,
            self.settings.stall_s,
            loop,
        )
        sink.start()
        if await self._run(sink) is FinishReason.ABORT:
            transport.close()  # cut, client gone or shutting down: no [DONE], no last chunk
            return response
        with contextlib.suppress(ConnectionError):  # the client left after [DONE]
            await response.write_eof()
        return response

    async def complete(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is None:
            return web.Response(status=499)  # nginx's "client closed request"; nobody reads it
        loop = asyncio.get_running_loop()
        sink = BufferedSink(transport, self.salt, self.plan, self.planned_tokens, loop)
        reason = await self._run(sink)
        if reason is FinishReason.ABORT:
            return _json_error(503, "request aborted", "ServiceUnavailableError")
        if self.plan.stall:
            await asyncio.sleep(self.settings.stall_s)
        text = output_text(sink.words, stopped=reason is FinishReason.STOP)
        body = self.reply.body(text, reason.value, self.prompt_tokens, len(sink.words))
        if self.plan.malformed:
            body = body[: len(body) // 2]
        return web.Response(body=body, content_type="application/json")


async def serve(
    settings: SimSettings,
    on_listening: Callable[[str, int], None],
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop`` is set, then close connections and return."""
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, backlog=LISTEN_BACKLOG, reuse_address=True
        )
        await site.start()
        # Keep the start-up objects (modules, models) out of later full collections,
        # which would otherwise stall engine steps for milliseconds.
        gc.freeze()
        host, port = runner.addresses[0][:2]
        log.info("sim serving %s on %s:%d", settings.model, host, port)
        on_listening(str(host), int(port))
        await stop.wait()
    finally:
        await runner.cleanup()
