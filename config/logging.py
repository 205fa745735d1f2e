from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# Set by RequestContextMiddleware for the duration of a request, so every log
# line written while handling it carries its id, whatever logger wrote it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class JSONFormatter(logging.Formatter):
    """Format a log record as one JSON line carrying the current request id."""

    EXTRA_FIELDS = (
        "request_id",
        "method",
        "path",
        "status",
        "duration",
        "user_id",
        "remote_addr",
        "user_agent",
        "pid",
    )

    def format(self, record: logging.LogRecord) -> str:
        """Return *record* as a JSON object on one line."""
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in self.EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                payload[field] = value
        if "request_id" not in payload:
            request_id = request_id_var.get()
            if request_id is not None:
                payload["request_id"] = request_id
        # django.request names the status "status_code".
        status_code = getattr(record, "status_code", None)
        if status_code is not None and "status" not in payload:
            payload["status"] = status_code
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
