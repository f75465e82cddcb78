"""Child processes that end with their parent: a killed harness never leaves a server behind.

In the base stage (it imports nothing of the harness) so that code outside the load stage can
use it without importing ``harness.load``, whose ``__init__`` lets gevent patch the standard
library.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import sys


def die_with_parent() -> None:
    """In the child (``preexec_fn``): ask Linux to send SIGTERM when the parent dies, so a
    killed run never leaves a simulator or server behind (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a child told which port to listen on."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
