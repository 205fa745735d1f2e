"""The front of the Django WSGI app under granian (`python -m config.serve`).

The server reads requests asynchronously (in Rust), so a client that drips its
headers or body holds no Python thread. A request reaches a handler thread only
once it is complete (bodies up to ``MAX_REQUEST_BODY_BYTES``; a larger one is
a 413 answered here, so no upload holds a thread while it arrives).
``/healthz`` runs on the worker's event loop itself: it does no I/O, and a
liveness probe must answer even while every handler thread waits on the
database (a table lock, a slow query).
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
from config.wsgi import too_large

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
        receive: Receive | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._buffer = bytearray(body)
        self._more = more
        self._receive = receive
        self._loop = loop

    def _fill(self, size: int) -> None:
        while self._more and self._receive and (size < 0 or len(self._buffer) < size):
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
        while b"\n" not in self._buffer and self._more and self._receive:
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


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """Return a body read up to just past *limit*, and whether more follows.

    None if the client went away.
    """
    body, more = bytearray(), True
    while more and len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return bytes(body), more


def _declare_length(environ: dict[str, Any], body: bytes, more: bool) -> None:
    """Give a complete body read without Content-Length (chunked) its length.

    Django reads CONTENT_LENGTH bytes of a body, none when it is absent.
    """
    if body and not more and not environ.get("CONTENT_LENGTH"):
        environ["CONTENT_LENGTH"] = str(len(body))


def _base_environ(wsgi_input: _Input) -> dict[str, Any]:
    return {
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.input": wsgi_input,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _add_header(environ: dict[str, Any], name: str, value: str) -> None:
    key = name.upper().replace("-", "_")
    if key not in {"CONTENT_LENGTH", "CONTENT_TYPE"}:
        key = "HTTP_" + key
    environ[key] = f"{environ[key]},{value}" if key in environ else value


def _environ(scope: Scope, wsgi_input: _Input) -> dict[str, Any]:
    """Return the WSGI environ of an ASGI HTTP scope (PEP 3333)."""
    server = scope.get("server") or ("localhost", 80)
    environ = _base_environ(wsgi_input)
    environ.update(
        REQUEST_METHOD=scope["method"],
        PATH_INFO=scope["path"].encode("utf-8").decode("latin-1"),
        QUERY_STRING=scope["query_string"].decode("latin-1"),
        SERVER_NAME=server[0],
        SERVER_PORT=str(server[1] or 80),
        SERVER_PROTOCOL=f"HTTP/{scope.get('http_version', '1.1')}",
    )
    environ["wsgi.url_scheme"] = scope.get("scheme", "http")
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for name, value in scope["headers"]:
        _add_header(environ, name.decode("latin-1"), value.decode("latin-1"))
    return environ


def _rsgi_environ(scope: Any, wsgi_input: _Input) -> dict[str, Any]:
    """Return the WSGI environ of a granian RSGI scope."""
    server_name, _, server_port = scope.server.rpartition(":")
    environ = _base_environ(wsgi_input)
    environ.update(
        REQUEST_METHOD=scope.method,
        PATH_INFO=scope.path.encode("utf-8").decode("latin-1"),
        QUERY_STRING=scope.query_string,
        SERVER_NAME=server_name,
        SERVER_PORT=server_port,
        SERVER_PROTOCOL=f"HTTP/{scope.http_version}",
    )
    environ["wsgi.url_scheme"] = scope.scheme
    environ["REMOTE_ADDR"], _, environ["REMOTE_PORT"] = scope.client.rpartition(":")
    for name, value in scope.headers.items():
        _add_header(environ, name, value)
    return environ


class _Response:
    """What the WSGI app answered, collected in the handler thread."""

    __slots__ = ("body", "headers", "status", "streamed")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.streamed = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.status = int(status.split(" ", 1)[0])
        self.headers = headers
        return self.body.append

    @classmethod
    def too_large(cls) -> _Response:
        """The 413 for a body over MAX_REQUEST_BODY_BYTES, given on the event loop.

        Handed to a handler thread, such a body (a multipart upload Django
        streams to disk) would hold it for as long as the client takes to
        send it.
        """
        response = cls()
        response.body = too_large(response.start_response)
        return response

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers
        ]


class _Streamer:
    """Send a large answer from the handler thread, through the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def _wait(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def start(self, response: _Response) -> None:
        raise NotImplementedError

    def send(self, chunk: bytes, *, more: bool) -> None:
        raise NotImplementedError


class _ASGIStreamer(_Streamer):
    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        super().__init__(loop)
        self._send = send

    def start(self, response: _Response) -> None:
        start = {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.asgi_headers(),
        }
        self._wait(self._send(start))

    def send(self, chunk: bytes, *, more: bool) -> None:
        message = {"type": "http.response.body", "body": chunk, "more_body": more}
        self._wait(self._send(message))


class _RSGIStreamer(_Streamer):
    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
        super().__init__(loop)
        self._protocol = protocol
        self._transport: Any = None

    def start(self, response: _Response) -> None:
        async def start() -> Any:
            return self._protocol.response_stream(response.status, response.headers)

        self._transport = self._wait(start())

    def send(self, chunk: bytes, *, more: bool) -> None:
        if chunk:
            self._wait(self._transport.send_bytes(chunk))


def _chunks_receive(protocol: Any) -> Receive:
    """Return an ASGI-style receive() over an RSGI body's chunks."""
    chunks = protocol.__aiter__()

    async def receive() -> dict[str, Any]:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    return receive


def _answer_rsgi(protocol: Any, method: str, response: _Response) -> None:
    """Send a buffered answer over RSGI (no body for HEAD)."""
    body = b"" if method == "HEAD" else b"".join(response.body)
    protocol.response_bytes(response.status, response.headers, body)


async def _answer_asgi(send: Send, method: str, response: _Response) -> None:
    """Send a buffered answer over ASGI (no body for HEAD)."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.asgi_headers(),
        }
    )
    payload = b"" if method == "HEAD" else b"".join(response.body)
    await send({"type": "http.response.body", "body": payload})


class ServingApp:
    """Run the WSGI app in a bounded pool of handler threads; LOOP_PATHS inline.

    It speaks ASGI (any ASGI server) and RSGI, granian's own protocol, which
    costs less per request (the default).
    """

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

    # --- RSGI (granian) ---

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """Serve one RSGI HTTP request."""
        if scope.proto != "http":
            return
        loop = asyncio.get_running_loop()
        length = int(scope.headers.get("content-length") or 0)
        body, more = b"", False
        # The body is read here, off the handler threads, so a slow upload
        # holds no thread; one over the cap is refused here too.
        if length > self.body_limit:
            _answer_rsgi(protocol, scope.method, _Response.too_large())
            return
        if length:
            wsgi_input = _Input(await protocol(), False, None, loop)
        elif scope.headers.get("transfer-encoding"):
            # Chunked: no length to go by, so read up to the cap as it comes.
            receive = _chunks_receive(protocol)
            read = await _read_body(receive, self.body_limit)
            if read is None:
                return
            body, more = read
            if len(body) > self.body_limit:
                _answer_rsgi(protocol, scope.method, _Response.too_large())
                return
            wsgi_input = _Input(body, more, receive, loop)
        else:
            wsgi_input = _Input(b"", False, None, loop)
        environ = _rsgi_environ(scope, wsgi_input)
        _declare_length(environ, body, more)
        response = await self._dispatch(
            environ, scope.path, scope.method, _RSGIStreamer(loop, protocol)
        )
        if not response.streamed:
            _answer_rsgi(protocol, scope.method, response)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let the handler threads go when the worker stops."""
        self.executor.shutdown(wait=False)

    # --- ASGI ---

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
        read = await _read_body(receive, self.body_limit)
        if read is None:
            return  # the client went away
        body, more = read
        if len(body) > self.body_limit:
            await _answer_asgi(send, scope["method"], _Response.too_large())
            return
        environ = _environ(scope, _Input(body, more, receive, loop))
        _declare_length(environ, body, more)
        response = await self._dispatch(
            environ, scope["path"], scope["method"], _ASGIStreamer(loop, send)
        )
        if not response.streamed:
            await _answer_asgi(send, scope["method"], response)

    # --- both ---

    async def _dispatch(
        self, environ: dict[str, Any], path: str, method: str, streamer: _Streamer
    ) -> _Response:
        if path in LOOP_PATHS and method in {"GET", "HEAD"}:
            return self._loop_context.run(self._run, environ, None)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._run, environ, streamer)

    def _run(self, environ: dict[str, Any], streamer: _Streamer | None) -> _Response:
        """Call the WSGI app; stream from this thread if the answer is large."""
        response = _Response()
        head = environ["REQUEST_METHOD"] == "HEAD"
        size = 0
        try:
            chunks = self.wsgi_app(environ, response.start_response)
            try:
                for chunk in chunks:
                    if not chunk:
                        continue
                    if response.streamed:
                        if not head:
                            streamer.send(chunk, more=True)  # type: ignore[union-attr]
                        continue
                    response.body.append(chunk)
                    size += len(chunk)
                    if size > RESPONSE_BUFFER_BYTES and streamer is not None:
                        streamer.start(response)
                        response.streamed = True
                        if not head:
                            streamer.send(b"".join(response.body), more=True)
                        response.body = []
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
        if response.streamed and streamer is not None:
            streamer.send(b"", more=False)
        return response


application = ServingApp(django_application, threads=settings.SERVER_THREADS)
