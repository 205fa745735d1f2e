"""Values read from Redis, kept in the process until Redis says they changed.

Redis's server-assisted client-side caching in its two-connection form: a
reader's data connection runs ``CLIENT TRACKING ON REDIRECT <id>``, and Redis
publishes an invalidation of every key that connection read on the
``__redis__:invalidate`` channel of its second connection when the key is
written, deleted, expires or is evicted (or the database is flushed). Both
speak RESP2 through redis-py's public ``Connection`` methods, so replies and
invalidations never share a socket. redis-py's own client-side cache
(``CacheConfig``) refuses servers before Redis 7.4 and checks a connection out
of its pool per read; ``make bench`` (group ``localcache``) compares the two.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("config.cache")

# Bytes counted per kept value on top of its key and value (dict slot, objects).
ENTRY_OVERHEAD = 100
INVALIDATION_CHANNEL = "__redis__:invalidate"


class LocalCopies:
    """Raw values read from Redis, bounded by the bytes kept (least recently used out).

    Raw bytes are kept, so every read unpickles its own copy.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        registry.add(self)

    def __len__(self) -> int:
        return len(self._values)

    @staticmethod
    def size(name: str, raw: bytes) -> int:
        """Return the bytes a value counts against the budget."""
        return len(name) + len(raw) + ENTRY_OVERHEAD

    def get(self, name: str) -> bytes | None:
        """Return the value kept for *name*, or None."""
        with self._lock:
            raw = self._values.get(name)
            if raw is not None:
                self._values.move_to_end(name)
            return raw

    def put(self, name: str, raw: bytes) -> None:
        """Keep *raw* as the value of *name* (unless it alone exceeds the budget)."""
        size = self.size(name, raw)
        with self._lock:
            self._pop(name)
            if size > self.max_bytes:
                return
            self._values[name] = raw
            self._bytes += size
            while self._bytes > self.max_bytes:
                dropped, value = self._values.popitem(last=False)
                self._bytes -= self.size(dropped, value)

    def discard(self, names: Iterable[str]) -> None:
        """Forget *names*."""
        with self._lock:
            for name in names:
                self._pop(name)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._values.clear()
            self._bytes = 0

    def _pop(self, name: str) -> None:
        raw = self._values.pop(name, None)
        if raw is not None:
            self._bytes -= self.size(name, raw)


class CopiesRegistry:
    """Every ``LocalCopies`` of this process, so a write can drop its keys from all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._every: weakref.WeakSet[LocalCopies] = weakref.WeakSet()

    def add(self, copies: LocalCopies) -> None:
        """Register *copies*."""
        with self._lock:
            self._every.add(copies)

    def forget(self, names: Iterable[str] | None = None) -> None:
        """Drop *names* (Redis key names; None: all) from every local copy.

        Writes through this process call it, so its own threads read their
        writes without waiting for Redis's invalidation message.
        """
        names = None if names is None else list(names)
        with self._lock:
            every = list(self._every)
        for copies in every:
            if names is None:
                copies.clear()
            else:
                copies.discard(names)


registry = CopiesRegistry()


def _run_id(info: bytes | str) -> str | None:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return None


class TrackedReader:
    """One thread's MGETs, served from its ``LocalCopies`` while Redis vouches for them.

    ``mget`` serves from the copies when all names are there, every
    invalidation Redis sent has been applied (a non-blocking poll of the
    invalidation connection) and the data connection proved current within
    *lease* seconds; otherwise it sends one MGET (a consistent snapshot) and
    keeps the values. A lost connection drops the copies: their invalidations
    can no longer arrive. With *copies* None, or when the server refuses
    ``CLIENT TRACKING`` (logged once), every read is one MGET.
    """

    def __init__(
        self,
        connection_class: type[Connection],
        connection_kwargs: dict[str, Any],
        copies: LocalCopies | None,
        *,
        lease: float,
    ) -> None:
        # RESP2: no push message can come between a command and its reply.
        self._kwargs = {**connection_kwargs, "protocol": 2}
        self._class = connection_class
        self.copies = copies
        self.lease = lease
        self.confirmed_at = float("-inf")
        self.tracking = False
        self._data = connection_class(**self._kwargs)
        self._data.register_connect_callback(self._on_connect)
        self._invalidations: Connection | None = None
        self._warned = False
        self.pid = os.getpid()
        self.run_id: str | None = None  # of the server the data connection is on

    def mget(self, names: list[str]) -> list[bytes | None]:
        """Return the raw values of *names* (None where missing)."""
        copies = self.copies
        try:
            if not self._data.is_connected:
                self._data.connect()  # runs _on_connect
            if (
                copies is not None
                and self.tracking
                and self._drained()
                and self._open()
                and time.monotonic() - self.confirmed_at < self.lease
            ):
                raws = [copies.get(name) for name in names]
                if None not in raws:
                    return raws
            sent_at = time.monotonic()
            self._data.send_command("MGET", *names)
            values = self._data.read_response()
            if not isinstance(values, list) or len(values) != len(names):
                raise RedisConnectionError("unexpected reply to MGET")
        except BaseException:
            # Whatever was left unread would answer the next command, and
            # invalidations may have been lost with either socket.
            self.close()
            raise
        if copies is not None and self.tracking:
            self.confirmed_at = sent_at
            for name, raw in zip(names, values, strict=True):
                if raw is not None:
                    copies.put(name, raw)
        return values

    def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send *commands* on the data connection at once; return their replies.

        The writes of cached reads (entries, locks, versions) go this way: a
        round trip on this thread's own connection costs a fraction of the
        CPU of one through the client's pool.
        """
        data = self._data
        try:
            if not data.is_connected:
                data.connect()  # runs _on_connect
            data.send_packed_command(data.pack_commands(commands))
            return [data.read_response() for _ in commands]
        except BaseException:
            self.close()  # replies left unread would answer the next command
            raise

    def close(self) -> None:
        """Disconnect both connections and forget the copies."""
        self._reset()
        self._data.disconnect()
        if self._invalidations is not None:
            self._invalidations.disconnect()
            self._invalidations = None

    def _reset(self) -> None:
        self.tracking = False
        self.confirmed_at = float("-inf")
        if self.copies is not None:
            self.copies.clear()

    def _on_connect(self, data: Connection) -> None:
        """Learn the server's run_id; point tracking at a new invalidation link."""
        self._reset()
        if self._invalidations is not None:
            self._invalidations.disconnect()
            self._invalidations = None
        try:
            data.send_command("INFO", "server")
            self.run_id = _run_id(data.read_response())
        except ResponseError as exc:
            # An ACL without INFO: a restarted Redis can no longer be told apart.
            self.run_id = None
            self._warn(f"INFO refused, restarts not detected: {exc}")
        if self.copies is None:
            return
        listener = self._class(**self._kwargs)
        try:
            listener.connect()
            listener.send_command("CLIENT", "ID")
            client_id = listener.read_response()
            listener.send_command("SUBSCRIBE", INVALIDATION_CHANNEL)
            listener.read_response()
            data.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id)
            data.read_response()
        except ResponseError as exc:
            # An ACL without CLIENT TRACKING or the channel, or an old server.
            listener.disconnect()
            self._no_copies(f"CLIENT TRACKING refused: {exc}")
            return
        except BaseException:
            listener.disconnect()
            raise
        self._invalidations = listener
        self.tracking = True

    def _no_copies(self, reason: str) -> None:
        self.copies = None
        self._warn(f"no local cache copies ({reason}): every cached read asks Redis")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s", message)

    def _open(self) -> bool:
        """Return True if the data connection is still open (its peer may close it).

        With nothing asked, anything to read is the server closing it (a
        restart, ``CLIENT KILL``): its tracking, and the invalidations of
        what it read, are gone with it.
        """
        if self._data.can_read(timeout=0):  # raises on a closed socket
            raise RedisConnectionError("unexpected data on the read connection")
        return True

    def _drained(self) -> bool:
        """Apply the invalidations Redis sent; False if one is still incomplete."""
        listener = self._invalidations
        if listener is None:
            return False
        while listener.can_read(timeout=0):
            try:
                message = listener.read_response(timeout=0, disconnect_on_error=False)
            except RedisTimeoutError:
                return False  # half a message so far: the next read completes it
            self._apply(message)
        return True

    def _apply(self, message: Any) -> None:
        copies = self.copies
        if copies is None:
            return
        try:
            kind, _channel, names = message
            if kind != b"message":
                raise ValueError(kind)
            if names is None:  # FLUSHDB / FLUSHALL
                copies.clear()
            else:
                copies.discard(n.decode() if isinstance(n, bytes) else n for n in names)
        except (TypeError, ValueError):
            copies.clear()  # an invalidation must never be lost
