import io
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class ChunkedBodyMiddleware:
    """Hand Django a chunked request body, which it would read as empty.

    Django reads CONTENT_LENGTH bytes of a body, none when the header is
    absent, as it is with ``Transfer-Encoding: chunked``. This reads such a
    body (up to MAX_REQUEST_BODY_BYTES; longer is a 413) and declares its
    length. config.serving reads chunked bodies itself and refuses the ones
    over the cap (with too_large()), so this serves gunicorn and granian's
    WSGI interface.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not environ.get("CONTENT_LENGTH") and "chunked" in (
            environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            from django.conf import settings

            limit = settings.MAX_REQUEST_BODY_BYTES
            body = _read_up_to(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                return too_large(start_response)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def too_large(start_response: Callable[..., Any]) -> list[bytes]:
    """Answer 413 with RequestBodyTooLarge's JSON, closing the connection."""
    from config.api.exceptions import RequestBodyTooLarge

    start_response(
        "413 Content Too Large",
        [("Content-Type", "application/json"), ("Connection", "close")],
    )
    return [json.dumps({"detail": RequestBodyTooLarge.default_detail}).encode()]


def _read_up_to(stream: Any, size: int) -> bytes:
    chunks, total = [], 0
    while total < size and (chunk := stream.read(size - total)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


application = ChunkedBodyMiddleware(get_wsgi_application())


def _log_backends() -> None:
    """Say once per worker which database and cache this process serves from."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    embedded = "DATABASE_URL" not in os.environ
    cache = settings.CACHES["default"]
    cache_desc = (
        "Redis at " + cache["LOCATION"].rsplit("@", 1)[-1]
        if "redis" in cache["BACKEND"].lower()
        else f"PostgreSQL database cache (table {cache['LOCATION']})"
    )
    logging.getLogger("config.startup").info(
        "database: %sPostgreSQL %s/%s (%s); cache: %s",
        "embedded " if embedded else "",
        db["HOST"] or "localhost",
        db["NAME"],
        settings.DB_CONNECTIONS,
        cache_desc,
    )


_log_backends()
