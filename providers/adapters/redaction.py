"""The one path every provider error takes before anyone sees it: the credential comes out.

An upstream may echo what it received (a misconfigured proxy, a debugging endpoint, a
provider quoting the ``Authorization`` header back in its error), and that text goes to
the client, into a stream's ``error`` event and into the logs. ``redact`` removes the
provider key from it in any letter case, and also any fragment of 12 or more
characters of it: a truncated echo ("sk-proj-abc…") still gives most of a key away.
Keys shorter than 12 characters are removed whole (when at least 4 characters long;
anything shorter would blank out ordinary words).

``ProviderAdapter`` (base.py) applies this to every adapter's ``complete`` and
``stream``, plain and streaming, so no adapter can forget it.
"""

from __future__ import annotations

import re
from functools import lru_cache

REDACTED = "[redacted]"
MIN_FRAGMENT = 12
MIN_SECRET = 4


@lru_cache(maxsize=256)
def _pattern(secret: str) -> re.Pattern[str] | None:
    if len(secret) < MIN_SECRET:
        return None
    if len(secret) <= MIN_FRAGMENT:
        pieces = {secret}
    else:  # every window of MIN_FRAGMENT characters: any longer fragment contains one of them
        pieces = {secret[i : i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
    alternatives = "|".join(re.escape(p) for p in sorted(pieces))
    # A lookahead finds overlapping occurrences, so a whole key is covered window by window.
    return re.compile(f"(?=({alternatives}))", re.IGNORECASE)


def redact(secret: str, text: str) -> str:
    """``text`` with ``secret`` and every 12+ character fragment of it, in any case, replaced."""
    if not secret or not text:
        return text
    pattern = _pattern(secret)
    if pattern is None:
        return text
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    parts: list[str] = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)
