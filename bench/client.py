"""A small keep-alive HTTP client for single-shot timings, logins and probes."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import time
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie


@dataclass
class Response:
    """One HTTP response with its wall time and the server's X-Process-Time."""

    status: int
    headers: dict[str, str]
    body: bytes
    wall_s: float
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def server_s(self) -> float | None:
        """Return the server-side duration from X-Process-Time, when present."""
        value = self.headers.get("x-process-time")
        return float(value) if value else None

    def json(self) -> object:
        """Return the decoded JSON body."""
        return json.loads(self.body)


class Client:
    """Sequential requests over one persistent connection, with optional auth."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request and read the whole response."""
        all_headers = {**self.headers, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            conn = self._connection()
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                raw = conn.getresponse()
                data = raw.read()
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
            ):
                # A keep-alive connection the server closed (gunicorn's keepalive
                # or max_requests): reconnect once.
                self.close()
                if attempt:
                    raise
                continue
            wall = time.perf_counter() - started
            cookies: dict[str, str] = {}
            for value in raw.headers.get_all("Set-Cookie") or []:
                jar = SimpleCookie()
                jar.load(value)
                cookies.update({name: morsel.value for name, morsel in jar.items()})
            return Response(
                status=raw.status,
                headers={k.lower(): v for k, v in raw.getheaders()},
                body=data,
                wall_s=wall,
                cookies=cookies,
            )
        raise AssertionError("unreachable")

    def get(self, path: str, **kwargs: object) -> Response:
        """Send a GET."""
        return self.request("GET", path, **kwargs)  # type: ignore[arg-type]


def jwt_access_token(client: Client, api_prefix: str, email: str, password: str) -> str:
    """Sign in through POST {api_prefix}/auth/token/ and return the access token."""
    response = client.request(
        "POST",
        f"{api_prefix}/auth/token/",
        json_body={"email": email, "password": password},
    )
    if response.status != 200:
        raise RuntimeError(
            f"sign-in as {email} failed: {response.status} {response.body[:300]!r}"
        )
    return str(response.json()["access"])  # type: ignore[index]


_CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def admin_session_cookie(client: Client, email: str, password: str) -> str:
    """Sign in to /admin/ through its login form and return the Cookie header."""
    page = client.get("/admin/login/?next=/admin/")
    match = _CSRF_INPUT.search(page.body)
    if page.status != 200 or not match or "csrftoken" not in page.cookies:
        raise RuntimeError(f"admin login page unusable: {page.status}")
    csrf_cookie = page.cookies["csrftoken"]
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": match.group(1).decode(),
            "username": email,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    response = client.request(
        "POST",
        "/admin/login/?next=/admin/",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf_cookie}",
        },
    )
    session = response.cookies.get("sessionid")
    if response.status != 302 or not session:
        raise RuntimeError(f"admin login as {email} failed: {response.status}")
    return f"csrftoken={csrf_cookie}; sessionid={session}"


@dataclass(frozen=True)
class Timings:
    """Summary of sequential requests: wall and server percentiles in ms."""

    count: int
    total_s: float
    wall_p50_ms: float
    wall_p99_ms: float
    server_p50_ms: float | None
    server_total_ms: float | None
    errors: int

    @property
    def rps(self) -> float:
        """Return requests per second over the whole sequence."""
        return self.count / self.total_s if self.total_s else 0.0


def percentile(values: list[float], pct: float) -> float:
    """Return the *pct* percentile of *values* (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarise(responses: list[Response], total_s: float, ok: set[int]) -> Timings:
    """Summarise *responses*; statuses outside *ok* count as errors."""
    walls = [r.wall_s * 1000 for r in responses]
    servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
    return Timings(
        count=len(responses),
        total_s=total_s,
        wall_p50_ms=statistics.median(walls) if walls else 0.0,
        wall_p99_ms=percentile(walls, 99),
        server_p50_ms=statistics.median(servers) if servers else None,
        server_total_ms=sum(servers) if servers else None,
        errors=sum(1 for r in responses if r.status not in ok),
    )
