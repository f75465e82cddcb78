"""``harness sim``: run the simulator in the foreground until SIGTERM or SIGINT.

Options are generated from SimSettings, so the CLI, ``SimSettings.to_cli_args`` and
the model cannot drift apart: a field ``x_y`` is ``--x-y``, and a duration ``x_s`` is
``--x-ms`` in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import types
from collections.abc import Callable
from decimal import InvalidOperation
from typing import Any, Union, get_args, get_origin

import click
from pydantic import SecretStr, ValidationError

from harness.sim.server import serve
from harness.sim.settings import (
    API_KEY_ENV,
    SimSettings,
    cli_flag,
    ms_to_seconds,
    seconds_to_ms,
)


class _Milliseconds(click.ParamType):  # type: ignore[type-arg]
    """A duration given in milliseconds, converted to seconds exactly."""

    name = "ms"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return ms_to_seconds(str(value))
        except InvalidOperation:
            self.fail(f"{value!r} is not a number of milliseconds", param, ctx)


def _click_type(annotation: Any) -> Any:
    """The click type of a settings field: the annotation without its ``| None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is SecretStr:
        return str
    return annotation


def _settings_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, info in reversed(SimSettings.model_fields.items()):
        flag, in_ms = cli_flag(name)
        default = info.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        option = click.option(
            flag,
            name,
            type=_Milliseconds() if in_ms else _click_type(info.annotation),
            default=seconds_to_ms(default) if in_ms else default,
            show_default=default is not None,
            envvar=API_KEY_ENV if name == "api_key" else None,
            show_envvar=name == "api_key",
            help=(info.description or "") + (" In milliseconds." if in_ms else ""),
        )
        command = option(command)
    return command


def settings_from_cli(values: dict[str, Any]) -> SimSettings:
    """SimSettings from parsed options, or a click usage error (exit code 2)."""
    try:
        return SimSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = first["loc"]
        flag = cli_flag(str(loc[0]))[0] if loc else "settings"
        raise click.UsageError(f"{flag}: {first['msg']}") from None


def listening_line(host: str, port: int, model: str) -> str:
    """The one stdout line a parent process reads to learn the port."""
    return json.dumps({"event": "listening", "host": host, "port": port, "model": model})


async def _run(settings: SimSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def announce(host: str, port: int) -> None:
        sys.stdout.write(listening_line(host, port, settings.model) + "\n")
        sys.stdout.flush()

    await serve(settings, announce, stop)


@click.command("sim")
@_settings_options
def sim(**values: Any) -> None:
    """Run the built-in vLLM-like OpenAI-compatible server (the default load target).

    Prints one JSON line with the address once listening; stops cleanly on SIGTERM or
    SIGINT. The API key may also come from the HARNESS_SIM_API_KEY environment variable.
    """
    settings = settings_from_cli(values)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_run(settings))
    except OSError as exc:  # the port is taken, the address is not local...
        msg = f"cannot listen on {settings.host}:{settings.port}: {exc}"
        raise click.ClickException(msg) from exc
