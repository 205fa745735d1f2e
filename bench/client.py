"""A small keep-alive HTTP client for single-shot timings, logins and probes."""

from __future__ import annotations

import http.client
import json
import re
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
