"""Request context (X-Request-ID, X-Process-Time, JSON log line), DB 503s, probes."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.signals import got_request_exception, request_finished
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.functional import SimpleLazyObject, empty
from django.utils.log import log_response

from config import health
from config.db_router import begin_request
from config.logging import request_id_var
from config.metrics import DB_UNAVAILABLE, metrics_view

logger = logging.getLogger("config.request")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DB_RETRY_AFTER_SECONDS = 5
_DB_ERRORS = (OperationalError, InterfaceError)


def database_failure_response(exc: BaseException) -> JsonResponse:
    """Return the 503 JSON answer for a PostgreSQL failure or statement timeout."""
    timed_out = _is_statement_timeout(exc)
    reason = "timeout" if timed_out else "unavailable"
    DB_UNAVAILABLE.labels(reason=reason).inc()
    detail = (
        "The database did not answer in time; retry shortly."
        if timed_out
        else "The database is unavailable; retry shortly."
    )
    response = JsonResponse(
        {"detail": detail, "code": f"database_{reason}"}, status=503
    )
    response["Retry-After"] = str(DB_RETRY_AFTER_SECONDS)
    return response


def _is_statement_timeout(exc: BaseException) -> bool:
    # Django re-raises psycopg's QueryCanceled (SQLSTATE 57014) as its own
    # OperationalError with the driver error as the cause.
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) == "57014"


def _remember_database_failure(
    sender: object, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Errors raised by middleware (not views) never reach process_exception;
    # Django turns them into a 500 inside the chain. Remember the cause here so
    # RequestContextMiddleware can answer 503 instead.
    exc = sys.exc_info()[1]
    if request is not None and isinstance(exc, _DB_ERRORS):
        request._database_failure = exc


def _forget_request_id(sender: object, **kwargs: Any) -> None:
    request_id_var.set(None)


class RequestContextMiddleware:
    """Tag each request with an id and timing, log it as JSON, and 503 on DB failure."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        got_request_exception.connect(
            _remember_database_failure, dispatch_uid="config.middleware.db_failure"
        )
        request_finished.connect(
            _forget_request_id, dispatch_uid="config.middleware.request_id"
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = (
            incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        # Cleared on request_finished, not here: Django logs 4xx/5xx answers
        # after the middleware chain returns, and those lines need the id too.
        request_id_var.set(request.request_id)
        begin_request(request.method or "GET")
        response = self.get_response(request)
        failure = getattr(request, "_database_failure", None)
        if failure is not None and response.status_code == 500:
            response = database_failure_response(failure)
        duration = time.perf_counter() - started
        response["X-Request-ID"] = request.request_id
        response["X-Process-Time"] = f"{duration:.6f}"
        self._log(request, response, duration)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        """Answer 503 JSON with Retry-After when PostgreSQL failed or timed out."""
        if not isinstance(exception, _DB_ERRORS):
            return None
        response = database_failure_response(exception)
        log_response(
            "Database failure on %s: %s",
            request.path,
            exception,
            response=response,
            request=request,
            level="warning",
        )
        return response

    def _log(
        self, request: HttpRequest, response: HttpResponse, duration: float
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        # The query string is left out: it may carry tokens.
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request.request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration": round(duration, 6),
                "user_id": _resolved_user_id(request),
            },
        )


def _resolved_user_id(request: HttpRequest) -> int | None:
    # Only read a user that authentication already resolved: touching the lazy
    # session user here would cost a query (or fail while PostgreSQL is down).
    user = request.__dict__.get("user")
    if user is None:
        return None
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        return None
    return user.pk if getattr(user, "is_authenticated", False) else None


class ProbeMiddleware:
    """Answer /healthz, /readyz and /metrics whatever the Host header.

    Django checks the Host header against ALLOWED_HOSTS only when something
    calls ``request.get_host()`` (CommonMiddleware, CSRF, the HTTPS redirect),
    all of which run after this middleware. Probes and scrapes address a
    replica by service name or pod IP, which no site host list holds; /metrics
    stays guarded by peer network or token in its view. Other requests pay one
    dictionary lookup.
    """

    probes: dict[str, Callable[[HttpRequest], HttpResponse]] = {
        "/healthz": health.healthz,
        "/readyz": health.readyz,
        "/metrics": metrics_view,
    }

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = self.probes.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        return probe(request)


def _for_the_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(_API_PATHS)


_API_PATHS = settings.API_PREFIX.rstrip("/") + "/"


class _SiteOnly:
    """Leave the API's requests to the next middleware (mixed into Django's own).

    The API authenticates by bearer token only (JWT): no session, no
    messages, and DRF sets ``request.user``. Those middleware serve the admin
    and the site's pages. They stay in MIDDLEWARE as subclasses of Django's
    own, which the admin's checks require. (CSRF stays whole: the deploy
    checks want Django's class itself, and API views are exempt from it.)
    """

    get_response: Callable[[HttpRequest], HttpResponse]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _for_the_api(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class SiteSessionMiddleware(_SiteOnly, SessionMiddleware):
    """Django's sessions, for everything but the API."""


class SiteAuthenticationMiddleware(_SiteOnly, AuthenticationMiddleware):
    """Django's session user, for everything but the API (DRF authenticates it)."""


class SiteMessageMiddleware(_SiteOnly, MessageMiddleware):
    """Django's messages, for everything but the API."""
