"""The words synthetic prompts are made of, one standing for one token.

Part of what a synthetic workload spec means (a seed and a length give the same prompt on
every machine), and what the spec needs to check a shared-prefix workload's size, so it lives
with the spec; ``workload.text`` draws from it.
"""

from __future__ import annotations

_WORDS_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give "
    "most very after thing our just name good sentence man think say great where help "
    "through much before line right too mean old any same tell boy follow came want show "
    "also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move"
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS_TEXT.split())
"""The words prompts are made of (the order is part of the seeded output: do not reorder)."""
