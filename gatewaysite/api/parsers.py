"""JSON parsing that does not depend on the Content-Type header.

The seed's ``curl -d '{...}'`` examples send ``application/x-www-form-urlencoded``; a
client means JSON all the same, so every API body is parsed as JSON whatever it claims.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        raise ParseError("The request body is empty; expected a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"The request body is not valid JSON: {exc}") from None


class LenientJSONParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        return parse_json_body(raw)
