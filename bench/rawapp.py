"""A constant JSON answer over ASGI: the ceiling of the HTTP server alone."""

from __future__ import annotations

from typing import Any

BODY = b'{"status": "ok"}'
HEADERS = [(b"content-type", b"application/json")]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with BODY."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
