"""ASGI front of the Django WSGI app, served by granian (`python -m config.serve`).

The server reads requests asynchronously (in Rust), so a client that drips its
headers or body holds no Python thread. A request reaches a handler thread only
once it is complete (bodies up to ``MAX_REQUEST_BODY_BYTES``; a larger body
streams to the handler). ``/healthz`` runs on the worker's event loop itself:
it does no I/O, and a liveness probe must answer even while every handler
thread waits on the database (a table lock, a slow query).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from config.wsgi import application as django_application

logger = logging.getLogger("config.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Paths answered on the event loop: no I/O, so they never wait for a thread.
LOOP_PATHS = frozenset({"/healthz"})
# A response bigger than this streams from the handler thread chunk by chunk.
RESPONSE_BUFFER_BYTES = 1024 * 1024


class _Input:
    """wsgi.input: the buffered body, then whatever the client still sends."""

    def __init__(
        self,
        body: bytes,
        more: bool,
        receive: Receive,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._buffer = bytearray(body)
        self._more = more
        self._receive = receive
        self._loop = loop

    def _fill(self, size: int) -> None:
        while self._more and (size < 0 or len(self._buffer) < size):
            message = asyncio.run_coroutine_threadsafe(
                self._receive(), self._loop
            ).result()
            if message["type"] != "http.request":
                self._more = False
                break
            self._buffer += message.get("body", b"")
            self._more = message.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        self._fill(size)
        if size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buffer and self._more:
            if 0 <= size <= len(self._buffer):
                break
            self._fill(len(self._buffer) + 65536)
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size >= 0:
            end = min(end, size)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def __iter__(self) -> Iterable[bytes]:
        while line := self.readline():
            yield line


def _environ(scope: Scope, wsgi_input: _Input) -> dict[str, Any]:
    """Return the WSGI environ of an ASGI HTTP scope (PEP 3333)."""
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": wsgi_input,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name not in {"CONTENT_LENGTH", "CONTENT_TYPE"}:
            name = "HTTP_" + name
        value = raw_value.decode("latin-1")
        if name in environ:
            value = f"{environ[name]},{value}"
        environ[name] = value
    return environ


class _Response:
    """What the WSGI app answered, collected in the handler thread."""

    __slots__ = ("body", "headers", "status", "streamed")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.streamed = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.status = int(status.split(" ", 1)[0])
        self.headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
        ]
        return self.body.append


class ServingApp:
    """Run the WSGI app in a bounded pool of handler threads; LOOP_PATHS inline."""

    def __init__(self, wsgi_app: WSGIApp, *, threads: int) -> None:
        self.wsgi_app = wsgi_app
        self.threads = threads
        self.executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="handler"
        )
        self.body_limit = settings.MAX_REQUEST_BODY_BYTES
        # The inline paths always run in one context, as a handler thread does,
        # so what Django keeps in context-local storage lasts between requests.
        self._loop_context = contextvars.copy_context()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        body, more = bytearray(), True
        # The whole body is read here, off the handler threads, so a slow
        # upload holds no thread; only an oversized one streams to the handler.
        while more and len(body) <= self.body_limit:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        environ = _environ(scope, _Input(bytes(body), more, receive, loop))
        if scope["path"] in LOOP_PATHS and scope["method"] in {"GET", "HEAD"}:
            response = self._loop_context.run(self._run, environ, None, None)
        else:
            response = await loop.run_in_executor(
                self.executor, self._run, environ, loop, send
            )
        if response.streamed:
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.headers,
            }
        )
        payload = b"" if scope["method"] == "HEAD" else b"".join(response.body)
        await send({"type": "http.response.body", "body": payload})

    def _run(
        self,
        environ: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
        send: Send | None,
    ) -> _Response:
        """Call the WSGI app; stream from this thread if the answer is large."""
        response = _Response()
        size = 0
        try:
            chunks = self.wsgi_app(environ, response.start_response)
            try:
                for chunk in chunks:
                    if not chunk:
                        continue
                    if response.streamed:
                        if environ["REQUEST_METHOD"] != "HEAD":
                            self._send(loop, send, chunk, more=True)
                        continue
                    response.body.append(chunk)
                    size += len(chunk)
                    if size > RESPONSE_BUFFER_BYTES and loop and send:
                        self._start_streaming(loop, send, response, environ)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except Exception:
            logger.exception("unhandled error serving %s", environ.get("PATH_INFO"))
            if response.streamed:
                raise
            response = _Response()
            response.start_response(
                "500 Internal Server Error", [("Content-Type", "application/json")]
            )
            response.body = [b'{"detail": "Internal server error."}']
        if response.streamed:
            self._send(loop, send, b"", more=False)
        return response

    def _start_streaming(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Send,
        response: _Response,
        environ: dict[str, Any],
    ) -> None:
        start = {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.headers,
        }
        asyncio.run_coroutine_threadsafe(send(start), loop).result()
        response.streamed = True
        if environ["REQUEST_METHOD"] != "HEAD":
            self._send(loop, send, b"".join(response.body), more=True)
        response.body = []

    @staticmethod
    def _send(
        loop: asyncio.AbstractEventLoop | None,
        send: Send | None,
        chunk: bytes,
        *,
        more: bool,
    ) -> None:
        if loop is None or send is None:  # inline paths never stream
            return
        message = {"type": "http.response.body", "body": chunk, "more_body": more}
        asyncio.run_coroutine_threadsafe(send(message), loop).result()


application = ServingApp(django_application, threads=settings.SERVER_THREADS)
