"""Cached views: GET responses stored as rendered bytes under namespace versions."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, HttpResponseBase

from config.api.mixins import etag_matches
from config.cache.backend import last_operation_failed
from config.cache.namespaces import (
    read_versions,
    store_entries,
    versioned_entry,
    versioned_value,
)
from config.db_router import fresh_reads
from config.metrics import CACHE_HITS, CACHE_MISSES

if TYPE_CHECKING:
    from rest_framework.request import Request

LOCK_TIMEOUT_SECONDS = 10
LOCK_WAIT_SECONDS = 3.0
LOCK_POLL_SECONDS = 0.02
# Headers replayed on a hit; the rest (Vary, Allow, X-Request-ID...) is
# recomputed for every response.
STORED_HEADERS = ("Content-Type", "ETag", "Last-Modified", "Content-Language")


def response_cache_key(
    request: Request,
    *,
    view_id: str,
    audience: str,
    extra: str = "",
) -> str:
    """Return the key of a GET response: everything that can change its bytes."""
    # Sorted by parameter name only: the order of repeated values can matter.
    query = (
        urlencode(
            sorted(
                ((k, v) for k, values in request.GET.lists() for v in values),
                key=lambda pair: pair[0],
            )
        )
        if request.META.get("QUERY_STRING")
        else ""
    )
    renderer = getattr(request, "accepted_renderer", None)
    parts = [
        settings.API_VERSION,
        view_id,
        request.scheme or "",
        request.get_host(),
        request.path,
        query,
        getattr(renderer, "format", "") or "",
        getattr(request, "accepted_media_type", "") or "",
        audience,
        extra,
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return f"resp:{digest}"


def _replay(entry: tuple[int, bytes, dict[str, str]]) -> HttpResponse:
    status, content, headers = entry
    response = HttpResponse(content, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def get_or_compute(
    key: str,
    compute: Callable[[], Any],
    *,
    timeout: int,
    namespaces: tuple[str, ...] = (),
    single_flight: bool = True,
) -> tuple[Any, bool]:
    """Return (value, hit) for *key*, valid while *namespaces* keep their versions.

    The entry is stored with the versions read before computing it, and a
    read serves it only while they are still current: the entry and the
    versions come back in one round trip (or none, from local copies). The
    entry also carries its expiry time, so a local copy is not served past
    *timeout* even before Redis gets round to expiring the key. Concurrent
    misses wait for the first one's result under a short lock instead of all
    recomputing it (*single_flight*; a cheap computation is better repeated
    than paid for with two more round trips); a waiter that times out
    computes it itself. *compute* returns the value to store, or None to store
    nothing.
    """

    # Without the lock, a missing version (a first read of an object) is
    # drawn here and added with the entry: one round trip fewer. The lock
    # is keyed on the versions, which concurrent misses must share.
    drawn: dict[str, tuple[str, int | None]] | None = None if single_flight else {}

    def lookup() -> tuple[tuple[str, ...] | None, Any]:
        versions, entry = read_versions(key, namespaces, drawn=drawn)
        return versions, versioned_value(entry, versions)

    versions, value = lookup()
    if value is not None:
        return value, True
    if versions is None:
        return compute(), False
    lock_key = f"{key}:lock:{':'.join(versions)}"
    locked = single_flight and bool(cache.add(lock_key, 1, LOCK_TIMEOUT_SECONDS))
    if single_flight and not locked and not last_operation_failed():
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(LOCK_POLL_SECONDS)
            current, value = lookup()
            if value is not None:
                return value, True
            if current != versions:
                break  # a write moved on, or the cache went down: compute
    try:
        value = compute()
        if value is not None:
            store_entries(
                {key: (versioned_entry(versions, value, timeout), timeout)}, drawn
            )
    finally:
        if locked:
            cache.delete(lock_key)
    return value, False


class CachedViewMixin:
    """Serve GET responses of DRF views from Redis, as rendered bytes.

    Authentication, permissions and throttles run in ``initial()`` before the
    cache is consulted, so a hit is refused exactly like a miss would be. The
    key covers path, sorted query, negotiated format, host and scheme (they
    appear in pagination links) and the caller's *audience* (``cache_vary``,
    or override ``cache_audience``); an entry is served only while the
    versions of ``cache_namespaces`` it was computed under still hold.
    """

    cache_namespaces: tuple[str, ...] = ()
    cache_actions: tuple[str, ...] = ("list", "retrieve")
    # Who shares an entry: "public" (everyone), "staff" (staff apart from the
    # rest) or "user" (each caller apart).
    cache_vary: str = "public"
    # Per action, the name of the setting holding the TTL (default CACHE_TTL).
    cache_ttl_settings: dict[str, str] = {}

    def cache_audience(self, request: Request) -> str:
        """Return who the body is for; equal audiences share one cached entry."""
        user = getattr(request, "user", None)
        signed_in = bool(user is not None and user.is_authenticated)
        if self.cache_vary == "staff":
            return "staff" if signed_in and user.is_staff else "public"
        if self.cache_vary == "user":
            return f"user:{user.pk}" if signed_in else "anonymous"
        return "public"

    def cache_dependencies(self, request: Request) -> tuple[str, ...]:
        """Return the namespaces this response depends on (``cache_namespaces``).

        Override to name narrower ones (one object's) where the request tells
        which; ``cache_namespaces`` still labels the metrics.
        """
        return self.cache_namespaces

    def cache_single_flight(self, request: Request) -> bool:
        """Return whether concurrent misses wait for one computation to finish."""
        return True

    def cache_key_extra(self, request: Request) -> str:
        """Return anything else the body depends on (e.g. today's date)."""
        return ""

    def get_cache_ttl(self) -> int:
        """Return the time to live of this action's entries, in seconds."""
        action = getattr(self, "action", None) or "get"
        return getattr(settings, self.cache_ttl_settings.get(action, "CACHE_TTL"))

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        action = getattr(self, "action", None)
        handler = getattr(self, "get", None)  # None: GET is not allowed here (405)
        if (
            request.method == "GET"
            and handler is not None
            and (action is None or action in self.cache_actions)
        ):
            # dispatch() looks the handler up after initial(): swapping it
            # here keeps the auth, permission and throttle checks on hits.
            self.get = functools.partial(self._cached_get, handler)

    def _cached_get(
        self,
        handler: Callable[..., HttpResponseBase],
        request: Request,
        *args: Any,
        **kwargs: Any,
    ) -> HttpResponseBase:
        label = ",".join(self.cache_namespaces) or "none"
        key = response_cache_key(
            request,
            view_id=f"{type(self).__module__}.{type(self).__qualname__}:"
            f"{getattr(self, 'action', None) or 'get'}",
            audience=self.cache_audience(request),
            extra=self.cache_key_extra(request),
        )
        rendered: list[HttpResponseBase] = []

        def compute() -> tuple[int, bytes, dict[str, str]] | None:
            # Never from a replica that lags behind the versions just read:
            # it would store pre-write data under them, stale until a write.
            with fresh_reads():
                response = handler(request, *args, **kwargs)
            # Render now (finalize_response is idempotent; dispatch repeats it)
            # so the bytes can be stored.
            response = self.finalize_response(request, response, *args, **kwargs)  # type: ignore[attr-defined]
            if hasattr(response, "render"):
                response.render()
            rendered.append(response)
            if response.status_code != 200 or response.streaming:
                return None
            headers = {h: response[h] for h in STORED_HEADERS if h in response}
            return response.status_code, bytes(response.content), headers

        entry, hit = get_or_compute(
            key,
            compute,
            timeout=self.get_cache_ttl(),
            namespaces=self.cache_dependencies(request),
            single_flight=self.cache_single_flight(request),
        )
        if hit:
            CACHE_HITS.labels(namespace=label).inc()
            etag = entry[2].get("ETag")
            if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
            if etag and if_none_match and etag_matches(if_none_match, etag, weak=True):
                response = HttpResponse(status=304)
                del response["Content-Type"]  # a 304 has no body to describe
                response["ETag"] = etag
            else:
                response = _replay(entry)
            response["X-Cache"] = "HIT"
            return response
        CACHE_MISSES.labels(namespace=label).inc()
        response = rendered[-1]
        response["X-Cache"] = "MISS"
        return response
