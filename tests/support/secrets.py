"""What counts as a leaked key in the tests: any piece of it of 8 or more characters."""

from __future__ import annotations


def key_pieces(text: str, secret: str, shortest: int = 8) -> list[str]:
    """Every piece of ``secret`` of ``shortest`` characters that ``text`` contains."""
    pieces = (secret[i : i + shortest] for i in range(len(secret) - shortest + 1))
    return [piece for piece in pieces if piece in text]
