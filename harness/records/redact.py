"""Text from a server, made safe to keep: secrets out first, then clipped to a length.

The order matters. Clipping first can cut a key in two, and the half that stays no longer
matches the key: a 401 body that echoes the key across the cut would leave most of it in
``records.parquet``. So every kept text goes through ``safe_text``, which removes each whole
secret and any piece of one cut off at either edge of the text it was given (the body read was
itself limited), and only then clips.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
#: Edge pieces shorter than this are left: too short to help anyone guess a key, and long
#: enough that ordinary text rarely ends with the start of a key by chance.
MIN_EDGE = 4


def safe_text(text: str, secrets: Iterable[str | None] = (), limit: int | None = None) -> str:
    """``text`` without any secret or edge piece of one, then clipped to ``limit`` characters
    (ending in "..." when clipped)."""
    if not text:
        return text  # the common case: a successful request has no detail to clean
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(text) >= MIN_EDGE and text in secret:
            return MASK  # all that is left is a piece from inside the secret
        text = text.replace(secret, MASK)
        text = _mask_edges(text, secret)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def _mask_edges(text: str, secret: str) -> str:
    """Mask a tail of text that starts the secret and a head of text that ends it."""
    for k in range(min(len(secret) - 1, len(text)), MIN_EDGE - 1, -1):
        if text.endswith(secret[:k]):
            text = text[:-k] + MASK
            break
    for k in range(min(len(secret) - 1, len(text)), MIN_EDGE - 1, -1):
        if text.startswith(secret[-k:]):
            text = MASK + text[k:]
            break
    return text


#: Longest name of a serving deployment kept in a record.
BACKEND_LIMIT = 200


def backend_name(text: str) -> str:
    """A deployment's api base as safe and stable to keep and compare: no user:password@,
    no ?query or #fragment (where keys travel), scheme and host lower-case, no trailing
    slash. Text that is not a URL (a deployment id) is only trimmed; both are clipped."""
    text = text.strip()
    for mark in ("?", "#"):
        text = text.partition(mark)[0]
    scheme, sep, rest = text.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        host = authority.rpartition("@")[2].lower()
        text = f"{scheme.lower()}://{host}{slash}{path}"
    return text.rstrip("/")[:BACKEND_LIMIT]
