"""A JSON parser that turns every kind of hostile body into a 4xx, never a 500."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from config.api.exceptions import RequestBodyTooLarge

# Deeper documents are rejected before any serializer walks them: no payload of
# this API nests beyond a few levels, and recursive code downstream (validation,
# rendering, logging) would otherwise hit Python's recursion limit.
MAX_JSON_DEPTH = 32

# NUL cannot be stored in a PostgreSQL text column; a lone surrogate cannot be
# encoded as UTF-8. Both only reach a parsed string through a \u escape.
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ParseError(f"JSON parse error - {name} is not a valid JSON number.")


def _too_deep() -> ParseError:
    return ParseError(
        f"JSON parse error - nesting deeper than {MAX_JSON_DEPTH} levels."
    )


def _content_length(parser_context: dict[str, Any]) -> int:
    request = parser_context.get("request")
    if request is None:
        return 0
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def check_json_value(data: Any, *, check_strings: bool = True) -> None:
    """Raise ParseError if *data* nests too deeply or holds unusable values."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            for key, item in value.items():
                if check_strings and _FORBIDDEN_CHARS.search(key):
                    raise ParseError(
                        "JSON parse error - keys may not contain NUL characters "
                        "or lone surrogates."
                    )
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if check_strings and _FORBIDDEN_CHARS.search(value):
                raise ParseError(
                    "JSON parse error - strings may not contain NUL characters "
                    "or lone surrogates."
                )
        elif isinstance(value, float) and not math.isfinite(value):
            raise ParseError("JSON parse error - number out of range.")


class SafeJSONParser(JSONParser):
    """Parse JSON with a body cap, a depth limit and no NaN, NUL or lone surrogates."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        parser_context = parser_context or {}
        encoding = get_encoding(parser_context)
        limit = settings.MAX_REQUEST_BODY_BYTES
        if _content_length(parser_context) > limit:
            raise RequestBodyTooLarge()
        # Read one byte past the cap so a body longer than its header still fails.
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestBodyTooLarge()
        try:
            text = raw.decode(encoding)
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise _too_deep() from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        # Without a \u escape no NUL or surrogate can be in any parsed string
        # (strict JSON rejects raw control characters), so skip that scan.
        check_json_value(data, check_strings="\\u" in text)
        return data
