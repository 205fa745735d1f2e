"""Cache infrastructure: the fail-open Redis backend."""

from __future__ import annotations

import logging
import time

from django_prometheus.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

_LOG_INTERVAL_SECONDS = 30.0
_last_logged = 0.0


def log_cache_failure(exc: BaseException) -> None:
    """Log a cache failure at most once per interval, not once per request."""
    global _last_logged
    now = time.monotonic()
    if now - _last_logged >= _LOG_INTERVAL_SECONDS:
        _last_logged = now
        logger.warning("cache unavailable, serving uncached: %s", exc)


class FailOpenRedisCache(RedisCache):
    """django-redis cache that swallows errors (IGNORE_EXCEPTIONS), logging sparsely."""

    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        # django-redis logs every ignored exception; ours logs once per interval.
        self._log_ignored_exceptions = True
        self.logger = _SparseLogger()


class _SparseLogger:
    def error(self, msg: str, *args: object, **kwargs: object) -> None:
        log_cache_failure(RuntimeError(msg))
