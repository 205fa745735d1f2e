"""Atomic, proxy-aware rate limits kept in the shared (Redis) cache.

Each throttled answer, 429 or not, tells the client its quota in the IETF
``RateLimit-Policy`` and ``RateLimit`` header fields
(draft-ietf-httpapi-ratelimit-headers): ``"login";q=10;w=60`` and
``"login";r=7;t=42`` (requests left, seconds until the window resets).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, NamedTuple

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from config.metrics import THROTTLED_REQUESTS


def client_ip(request: Request) -> str:
    """Return the client address, trusting X-Forwarded-For only behind NUM_PROXIES."""
    remote_addr = request.META.get("REMOTE_ADDR", "")
    num_proxies = settings.NUM_PROXIES
    # DRF's own get_ident trusts the whole (client-controlled) header when no
    # proxy count is set; here the header is read only when proxies are declared.
    if not num_proxies:
        return remote_addr
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded:
        return remote_addr
    addrs = [addr.strip() for addr in forwarded.split(",")]
    return addrs[-min(num_proxies, len(addrs))] or remote_addr


class RateLimitState(NamedTuple):
    """One policy's quota and what is left of it, as the RateLimit fields say it."""

    policy: str
    quota: int
    window: int
    remaining: int
    reset: int


class FixedWindowRateThrottle(SimpleRateThrottle):
    """Count requests per window with one atomic INCR, so bursts cannot slip past."""

    # The name clients see in the RateLimit fields; the scope when unset.
    policy: str | None = None

    def get_rate(self) -> str | None:
        # Read at call time, not import time, so settings overrides apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request: Request) -> str:
        return client_ip(request)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return f"throttle:{self.scope}:{self.get_ident(request)}"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        key = f"{ident}:{window}"
        self.window_end = (window + 1) * self.duration
        self.now = now
        try:
            cache.add(key, 0, timeout=self.duration + 1)
            count = cache.incr(key)
        except ValueError:
            # The key vanished (eviction, flush): let this one through.
            return True
        # A fail-open cache answers None while Redis is down: do not lock
        # everyone out because the limiter itself is unavailable.
        if count is None:
            return True
        states = request.__dict__.setdefault("rate_limits", [])
        states.append(
            RateLimitState(
                policy=self.policy or self.scope,
                quota=self.num_requests,
                window=self.duration,
                remaining=max(self.num_requests - count, 0),
                reset=max(1, math.ceil(self.window_end - now)),
            )
        )
        if count > self.num_requests:
            THROTTLED_REQUESTS.labels(scope=self.scope).inc()
            return False
        return True

    def wait(self) -> float | None:
        return max(1.0, self.window_end - self.now)


class RateLimitHeadersMixin:
    """Add RateLimit-Policy and RateLimit to the answers of a throttled view."""

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        states: list[RateLimitState] = request.__dict__.get("rate_limits", ())
        if states:
            response["RateLimit-Policy"] = ", ".join(
                f'"{s.policy}";q={s.quota};w={s.window}' for s in states
            )
            response["RateLimit"] = ", ".join(
                f'"{s.policy}";r={s.remaining};t={s.reset}' for s in states
            )
        return response


class LoginRateThrottle(FixedWindowRateThrottle):
    """Limit sign-in attempts per client address."""

    scope = "login"


class LoginEmailRateThrottle(FixedWindowRateThrottle):
    """Limit sign-in attempts per target account, whatever address they come from."""

    scope = "login"
    policy = "login-account"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        data: Any = request.data
        email = data.get("email") if isinstance(data, dict) else None
        if not isinstance(email, str) or not email.strip():
            return None
        digest = hashlib.blake2b(email.strip().lower().encode(), digest_size=16)
        return f"throttle:{self.scope}:email:{digest.hexdigest()}"


class RegisterRateThrottle(FixedWindowRateThrottle):
    """Limit registrations per client address."""

    scope = "register"


class PasswordResetRateThrottle(FixedWindowRateThrottle):
    """Limit password-reset requests and confirmations per client address."""

    scope = "password_reset"
