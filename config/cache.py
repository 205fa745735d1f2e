"""Response caching: fail-open Redis backend, namespace versions, cached views.

A cached response is stored with the versions of the namespaces it depends on
("catalog", "users", "owners") and served only while they are still current.
A write bumps the version of its namespaces after commit, so every older
entry stops being served at once and is overwritten or expires; nothing
scans keys.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import hashlib
import inspect
import logging
import os
import pickle
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpResponse, HttpResponseBase
from django_prometheus.cache.backends.redis import RedisCache
from django_redis.compressors.identity import IdentityCompressor
from django_redis.exceptions import ConnectionInterrupted
from django_redis.serializers.pickle import PickleSerializer
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.api.mixins import etag_matches
from config.db_router import fresh_reads
from config.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES
from config.replica import note_committed_write

if TYPE_CHECKING:
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

# --- Namespaces ---
NAMESPACE_CATEGORIES = "categories"  # category rows (embedded in products)
NAMESPACE_PRODUCTS = "products"  # any product row: lists, counts, the dashboard
NAMESPACE_USERS = "users"  # user rows (any change, sign-ups included)
NAMESPACE_OWNERS = "owners"  # user fields embedded in products (username, is_active)
EVERY_OBJECT = "*"


def object_namespace(kind: str, pk: object = EVERY_OBJECT) -> str:
    """Return the namespace of one object of *kind* (EVERY_OBJECT: all of them).

    A detail entry depends on its object's namespace and on the EVERY_OBJECT
    one, so a write that names its rows bumps only theirs, and a write that
    cannot name them (a queryset update) bumps the EVERY_OBJECT namespace.
    """
    return f"{kind}:{pk}"


def _is_object_namespace(name: str) -> bool:
    return ":" in name and not name.endswith(f":{EVERY_OBJECT}")


# --- Fail-open Redis backend ---
_LOG_INTERVAL_SECONDS = 30.0
_last_logged = 0.0
_log_lock = threading.Lock()
_state = threading.local()
# Per Redis location: monotonic time before which operations are skipped.
_open_until: dict[str, float] = {}
_REDIS_FAILURES = (RedisError, ConnectionInterrupted, OSError)


def log_cache_failure(exc: BaseException) -> None:
    """Log a cache failure at most once per interval, not once per request."""
    global _last_logged
    now = time.monotonic()
    with _log_lock:
        if now - _last_logged < _LOG_INTERVAL_SECONDS:
            return
        _last_logged = now
    logger.warning(
        "cache unavailable, serving uncached: %s: %s", type(exc).__name__, exc
    )


def last_operation_failed() -> bool:
    """Return whether this thread's last cache operation failed or was skipped."""
    return getattr(_state, "failed", False)


def _fallback(operation: str, default: Any, args: tuple, kwargs: dict) -> Any:
    """Return what a failed cache *operation* answers (get: its own default)."""
    if operation == "get":
        return kwargs.get("default", args[1] if len(args) > 1 else None)
    return copy.copy(default)


def _fail_open(default: Any = None) -> Callable[[Callable], Callable]:
    def decorate(method: Callable) -> Callable:
        operation = method.__name__

        @functools.wraps(method)
        def wrapper(self: FailOpenRedisCache, *args: Any, **kwargs: Any) -> Any:
            if time.monotonic() < _open_until.get(self._server, 0.0):
                # Redis failed moments ago: skip it rather than pay the socket
                # timeout again on every call.
                _state.failed = True
                CACHE_ERRORS.labels(operation=operation).inc()
                return _fallback(operation, default, args, kwargs)
            try:
                result = method(self, *args, **kwargs)
            except _REDIS_FAILURES as exc:
                _state.failed = True
                _open_until[self._server] = time.monotonic() + float(
                    getattr(settings, "CACHE_RETRY_AFTER", 5.0)
                )
                CACHE_ERRORS.labels(operation=operation).inc()
                log_cache_failure(exc)
                return _fallback(operation, default, args, kwargs)
            _state.failed = False
            return result

        return wrapper

    return decorate


# --- Local copies (server-assisted client-side caching) ---
_local_log_lock = threading.Lock()
_local_logged = False
# Bytes counted per kept value on top of its key and value (dict slot, objects).
_ENTRY_OVERHEAD = 100


class LocalCopies:
    """Raw values read from Redis, kept until Redis says they changed.

    Filled by ``FailOpenRedisCache.get_many`` over a connection with
    ``CLIENT TRACKING`` on: Redis remembers which keys that connection read and
    pushes an ``invalidate`` message on it when one of them is written,
    deleted, expires or is evicted (or the database is flushed). Bounded by the
    bytes kept (keys, values and a per-entry overhead); the least recently used
    values go first. Raw bytes are kept, so every read unpickles its own copy.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        with _registry_lock:
            _every_local_copies.add(self)

    def __len__(self) -> int:
        return len(self._values)

    @staticmethod
    def _size(name: str, raw: bytes) -> int:
        return len(name) + len(raw) + _ENTRY_OVERHEAD

    def get(self, name: str) -> bytes | None:
        """Return the value kept for *name*, or None."""
        with self._lock:
            raw = self._values.get(name)
            if raw is not None:
                self._values.move_to_end(name)
            return raw

    def put(self, name: str, raw: bytes) -> None:
        """Keep *raw* as the value of *name* (unless it alone exceeds the budget)."""
        size = self._size(name, raw)
        with self._lock:
            self._pop(name)
            if size > self.max_bytes:
                return
            self._values[name] = raw
            self._bytes += size
            while self._bytes > self.max_bytes:
                dropped, value = self._values.popitem(last=False)
                self._bytes -= self._size(dropped, value)

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
            self._bytes -= self._size(name, raw)


_registry_lock = threading.Lock()
_every_local_copies: weakref.WeakSet[LocalCopies] = weakref.WeakSet()


def forget_local_copies(names: Iterable[str] | None = None) -> None:
    """Drop *names* (Redis key names; None: all) from every local copy in this process.

    Writes through this process call it, so its own threads read their
    writes without waiting for Redis's invalidation message.
    """
    names = None if names is None else list(names)
    with _registry_lock:
        every = list(_every_local_copies)
    for copies in every:
        if names is None:
            copies.clear()
        else:
            copies.discard(names)


def _log_no_local_copies(reason: str) -> None:
    global _local_logged
    with _local_log_lock:
        if _local_logged:
            return
        _local_logged = True
    logger.warning("no local cache copies (%s): every cached read asks Redis", reason)


@functools.cache
def _key_parameters(client_class: type, method: str) -> tuple[inspect.Signature, str]:
    signature = inspect.signature(getattr(client_class, method))
    return signature, next(p for p in signature.parameters if p != "self")


def _forgetting(method: Callable) -> Callable:
    """Wrap a cache write so this process drops its local copies of the keys written."""

    @functools.wraps(method)
    def wrapper(self: FailOpenRedisCache, *args: Any, **kwargs: Any) -> Any:
        # django-redis's cache methods take (*args, **kwargs); its client's
        # say where the keys, version and prefix are.
        client = self.client
        signature, name = _key_parameters(type(client), method.__name__)
        arguments = signature.bind(None, *args, **kwargs).arguments
        keys = arguments[name]
        if not isinstance(keys, str | dict | list | tuple | set | frozenset):
            keys = list(keys)  # an iterator: read it once, for both uses
            if args:
                args = (keys, *args[1:])
            else:
                kwargs = {**kwargs, name: keys}
        try:
            return method(self, *args, **kwargs)
        finally:
            version, prefix = arguments.get("version"), arguments.get("prefix")
            written = [keys] if isinstance(keys, str) else list(keys)
            forget_local_copies(
                client.make_key(key, version=version, prefix=prefix) for key in written
            )

    return wrapper


_INVALIDATED = object()


class FailOpenRedisCache(RedisCache):
    """django-redis cache whose failures are logged sparsely, counted and never raised.

    After a failure Redis is left alone for ``CACHE_RETRY_AFTER`` seconds, so an
    unreachable server costs one socket timeout per interval, not one per call.
    ``get_many`` serves values this thread read before from local copies that
    Redis invalidates (``LocalCopies``), so a cached read usually makes no
    round trip at all.
    """

    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        # Errors must reach _fail_open, which counts and logs them.
        self._ignore_exceptions = False
        self._read_connection: Connection | None = None
        self._owner = 0  # the thread the read connection belongs to
        max_bytes = int(getattr(settings, "CACHE_LOCAL_MAX_BYTES", 16 * 1024 * 1024))
        self._copies = LocalCopies(max_bytes) if max_bytes > 0 else None
        self._lease = float(getattr(settings, "CACHE_LOCAL_LEASE", 0.1))
        # Whether Redis tracks the keys read over the current connection, and
        # when the last command that proved the connection current was sent.
        self._tracking = False
        self._confirmed_at = float("-inf")

    get = _fail_open()(RedisCache.get)

    @_fail_open({})
    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict:
        """Return the values of *keys* that exist, from local copies or one MGET.

        The hot path of every cached read. Values this thread read before are
        served from its ``LocalCopies`` when all of *keys* are there, nothing
        Redis pushed since says otherwise, and the connection proved current
        within ``CACHE_LOCAL_LEASE`` seconds; otherwise all of *keys* are read
        in one MGET (a consistent snapshot) and kept. The MGET skips the
        client layers: checking a connection out of redis-py's pool and back
        in costs more CPU than the round trip itself (measured here: 131 us of
        CPU per get_many through django-redis, 64 us this way). It talks over
        a connection of its own, used only by the thread that opened it.
        """
        keys = list(keys)
        if not keys:
            return {}
        names = [self.make_key(key, version=version) for key in keys]
        if self._owner != threading.get_ident() and self._read_connection:
            # A backend shared across threads (ASGI contexts): the pool.
            values = self.client.get_client(write=False).mget(names)
        else:
            try:
                values = self._fetch(names)
            except RedisConnectionError:
                # A socket that Redis closed while idle (restart, timeout): one
                # more try on a new connection. A timeout is not retried.
                values = self._fetch(names)
        decode = self._decode
        return {
            key: decode(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    @functools.cached_property
    def _decode(self) -> Callable[[bytes], Any]:
        client = self.client
        if not (
            type(getattr(client, "_serializer", None)) is PickleSerializer
            and type(getattr(client, "_compressor", None)) is IdentityCompressor
        ):
            return client.decode

        def decode(value: bytes) -> Any:
            # django-redis stores an int as its digits and anything else
            # pickled (b"\x80..."); its decode tries int() first, and int()
            # of a long byte string takes ~9 us to fail.
            if value[:1] == b"\x80":
                return pickle.loads(value)  # noqa: S301 - our own cache entries
            return client.decode(value)

        return decode

    def _connection(self) -> Connection:
        """Return this thread's read connection, connected."""
        connection = self._read_connection
        if connection is None or connection.pid != os.getpid():
            connection = self._new_connection(local=self._copies is not None)
        if getattr(connection, "_sock", None) is None:
            self._reset_local()
            try:
                connection.connect()  # runs _start_tracking
            except ResponseError as exc:
                if self._copies is None:
                    raise
                # A server (or proxy) without RESP3: plain MGETs from now on.
                _log_no_local_copies(f"HELLO 3 refused: {exc}")
                self._copies = None
                connection = self._new_connection(local=False)
                connection.connect()
        return connection

    def _new_connection(self, *, local: bool) -> Connection:
        # Not connected yet: _connection() resets the local state before it
        # connects, and _start_tracking again once connected.
        pool = self.client.get_client(write=False).connection_pool
        kwargs = dict(pool.connection_kwargs)
        if local:
            # RESP3, so invalidations arrive on this same connection.
            kwargs["protocol"] = 3
        connection = pool.connection_class(**kwargs)
        if local:
            # Runs on every (re)connect, redis-py's own included.
            connection.register_connect_callback(self._start_tracking)
        self._read_connection = connection
        self._owner = threading.get_ident()
        return connection

    def _start_tracking(self, connection: Connection) -> None:
        self._reset_local()
        parser = connection._parser
        if getattr(parser, "_hiredis_PushNotificationType", True) is None:
            # hiredis before 3.2 cannot tell a push from a reply.
            _log_no_local_copies("hiredis too old for RESP3 push messages")
            return
        # redis-py's own client-side cache hooks its parser the same way.
        parser.set_invalidation_push_handler(self._on_invalidation)
        try:
            connection.send_command("CLIENT", "TRACKING", "ON")
            connection.read_response()
        except ResponseError as exc:
            # An ACL without CLIENT TRACKING, or a server without it.
            _log_no_local_copies(f"CLIENT TRACKING refused: {exc}")
            return
        self._tracking = True

    def _on_invalidation(self, message: list[Any]) -> object:
        copies = self._copies
        if copies is None:
            return _INVALIDATED
        try:
            names = message[1]
            if names is None:  # FLUSHDB / FLUSHALL
                copies.clear()
            else:
                copies.discard(n.decode() if isinstance(n, bytes) else n for n in names)
        except Exception:  # noqa: BLE001 - redis-py would log and drop it
            copies.clear()  # an invalidation must never be lost
        return _INVALIDATED

    def _reset_local(self) -> None:
        """Forget the local copies: their invalidations can no longer arrive."""
        self._tracking = False
        self._confirmed_at = float("-inf")
        if self._copies is not None:
            self._copies.clear()

    def _drained(self, connection: Connection) -> bool:
        """Apply the invalidations Redis pushed; False if one is still incomplete."""
        while connection.can_read(timeout=0):
            try:
                pushed = connection.read_response(
                    push_request=True, timeout=0, disconnect_on_error=False
                )
            except RedisTimeoutError:
                return False  # half a message so far: the MGET's read completes it
            if pushed is not _INVALIDATED:
                raise RedisConnectionError("unexpected reply on the read connection")
        return True

    def _read_reply(self, connection: Connection) -> Any:
        """Read a command's reply, applying the invalidations that come before it.

        One push at a time: redis-py would recurse once per push otherwise,
        and a burst of them (a cleared cache) would exhaust the stack.
        """
        while True:
            reply = connection.read_response(push_request=True)
            if reply is not _INVALIDATED:
                return reply

    def _fetch(self, names: list[str]) -> list[bytes | None]:
        connection = self._connection()
        copies = self._copies
        try:
            if (
                copies is not None
                and self._tracking
                and self._drained(connection)
                and time.monotonic() - self._confirmed_at < self._lease
            ):
                raws = [copies.get(name) for name in names]
                if None not in raws:
                    return raws
            sent_at = time.monotonic()
            connection.send_command("MGET", *names)
            values = self._read_reply(connection)
            if not isinstance(values, list) or len(values) != len(names):
                raise RedisConnectionError("unexpected reply to MGET")
        except BaseException:
            # Whatever was left unread would answer the next command, and
            # invalidations may have been lost with the socket.
            connection.disconnect()
            self._reset_local()
            raise
        if copies is not None and self._tracking:
            self._confirmed_at = sent_at
            for name, raw in zip(names, values, strict=True):
                if raw is not None:
                    copies.put(name, raw)
        return values

    @_fail_open(False)
    def await_invalidations(self) -> bool:
        """Return once Redis has sent out the invalidations of this thread's writes.

        Redis queues an invalidation message while it runs the write and
        writes it out before it reads further commands, so one more round trip
        after the write is enough: when PING is answered, every reader's
        invalidation is on its way (on one host: in its socket).
        """
        return bool(self.client.get_client(write=True).ping())

    set = _fail_open(False)(_forgetting(RedisCache.set))
    set_many = _fail_open([])(_forgetting(RedisCache.set_many))
    add = _fail_open(False)(_forgetting(RedisCache.add))
    delete = _fail_open(False)(_forgetting(RedisCache.delete))
    delete_many = _fail_open(0)(_forgetting(RedisCache.delete_many))
    has_key = _fail_open(False)(RedisCache.has_key)
    incr = _fail_open(None)(_forgetting(RedisCache.incr))
    decr = _fail_open(None)(_forgetting(RedisCache.decr))
    touch = _fail_open(False)(_forgetting(RedisCache.touch))
    ttl = _fail_open(None)(RedisCache.ttl)
    expire = _fail_open(False)(_forgetting(RedisCache.expire))

    @_fail_open(0)
    def delete_pattern(self, *args: Any, **kwargs: Any) -> int:
        """Delete the keys matching a pattern (and every local copy in this process)."""
        try:
            return RedisCache.delete_pattern(self, *args, **kwargs)
        finally:
            forget_local_copies()

    def clear(self) -> None:
        """Delete this cache's keys only (not FLUSHDB: the Redis database is shared)."""
        self.delete_pattern("*")


# --- Namespace versions ---
_pending_bumps: set[str] = set()
_PENDING_MAX = 1_000
_pending_lock = threading.Lock()


def _version_key(name: str) -> str:
    return f"ns:{name}"


def _new_version() -> str:
    # Random, never reused: a version key lost to eviction or a Redis restart
    # cannot bring back entries stored under an older version.
    return uuid.uuid4().hex[:16]


def _version_timeout(name: str) -> int | None:
    # One object's version is worth keeping only while entries computed under
    # it may live: once it expires, the next read draws a new random version,
    # which no older entry carries; so versions of single objects cannot pile
    # up in Redis. Shared versions are few and read by every entry: kept, so
    # they never expire under all the entries at once.
    if not _is_object_namespace(name):
        return None
    return max(settings.CACHE_TTL, getattr(settings, "USER_CACHE_TTL", 0))


def _set_versions(names: Iterable[str]) -> bool:
    """Give each namespace of *names* a new version; return whether Redis failed."""
    by_timeout: dict[int | None, dict[str, str]] = {}
    for name in names:
        by_timeout.setdefault(_version_timeout(name), {})[_version_key(name)] = (
            _new_version()
        )
    failed = False
    for timeout, versions in by_timeout.items():
        cache.set_many(versions, timeout)
        failed = failed or last_operation_failed()
    return failed


def bump_namespace(*names: str) -> None:
    """Invalidate every cached response that depends on *names*, now.

    Call it after commit (see bump_on_commit). A bump Redis misses is kept and
    retried on this process's next cache use. It returns once Redis has sent
    every other process's invalidation of its local copies of the versions.
    """
    if not names:
        return
    # The write's WAL position first: a reader seeing a new version must not
    # fill it from a replica that has not replayed the write (config.replica).
    failed = not note_committed_write() or _set_versions(names)
    with _pending_lock:
        if failed:
            _pending_bumps.update(names)
            if len(_pending_bumps) > _PENDING_MAX:
                # Redis is away during many writes: one bump per kind of
                # object covers them all, in bounded memory.
                for name in [n for n in _pending_bumps if _is_object_namespace(n)]:
                    _pending_bumps.discard(name)
                    _pending_bumps.add(object_namespace(name.split(":", 1)[0]))
        else:
            _pending_bumps.difference_update(names)
    if not failed and hasattr(cache, "await_invalidations"):
        cache.await_invalidations()


def bump_on_commit(*names: str, using: str | None = None) -> None:
    """Bump *names* once the current transaction commits (now in autocommit)."""
    transaction.on_commit(functools.partial(bump_namespace, *names), using=using)


def _retry_pending_bumps() -> None:
    if not _pending_bumps:  # the usual case: no lock taken on the hot path
        return
    with _pending_lock:
        pending = tuple(_pending_bumps)
    if pending:
        bump_namespace(*pending)


def _read(key: str | None, names: Iterable[str]) -> tuple[tuple[str, ...] | None, Any]:
    """Return (the versions of *names*, the value at *key*) in one round trip.

    The versions are None when the cache is down. A version key that is
    missing (first use, eviction, a Redis restart) gets a new random value.
    """
    _retry_pending_bumps()
    names = tuple(names)
    version_keys = [_version_key(name) for name in names]
    found = cache.get_many([key, *version_keys] if key else version_keys)
    if last_operation_failed():
        return None, None
    missing = [
        (n, k) for n, k in zip(names, version_keys, strict=True) if k not in found
    ]
    if missing:
        raced = []
        for name, k in missing:
            version = _new_version()
            if cache.add(k, version, _version_timeout(name)):
                found[k] = version  # what add() wrote: no need to read it back
            elif last_operation_failed():
                return None, None
            else:
                raced.append(k)  # another process drew it first
        if raced:
            found.update(cache.get_many(raced))
        if last_operation_failed() or any(k not in found for k in version_keys):
            return None, None
    return tuple(found[k] for k in version_keys), found.get(key) if key else None


def namespace_versions(*names: str) -> dict[str, str] | None:
    """Return the current version of each namespace, or None when the cache is down."""
    versions, _ = _read(None, names)
    return None if versions is None else dict(zip(names, versions, strict=True))


# --- Per-process memo checked against a namespace ---


class NamespaceMemo:
    """Values kept in this process for as long as a namespace keeps its version.

    ``get()`` reads the namespace's current version (usually from local
    copies that Redis invalidates, at most one round trip; far cheaper than
    the query it replaces) and returns the remembered value only
    if it was loaded under that version. A write bumps the version after
    commit, so every process reloads on its next use: invalidation is the
    same as for cached responses. With the cache down every call loads.
    Values are shared between the threads of a process: callers must not
    mutate them (hand out copies).
    """

    def __init__(self, namespace: str, *, maxsize: int = 10_000) -> None:
        self.namespace = namespace
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the value for *key*, calling *load* unless a current one is kept.

        A None from *load* is returned and not kept.
        """
        versions, _ = _read(None, (self.namespace,))
        if versions is None:
            return load()
        version = versions[0]
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(key)
                return entry[1]
        # Loaded after the version was read: a write committed in between
        # bumps it again, so this value is never kept past a newer write.
        value = load()
        if value is not None:
            with self._lock:
                self._entries[key] = (version, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return value


# --- Cached views ---
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

    def lookup() -> tuple[tuple[str, ...] | None, Any]:
        versions, entry = _read(key, namespaces)
        if (
            isinstance(entry, tuple)
            and len(entry) == 3
            and entry[0] == versions
            and entry[2] > time.time()
        ):
            return versions, entry[1]
        return versions, None

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
            cache.set(key, (versions, value, time.time() + timeout), timeout)
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


def cache_namespaces_for_user_write(
    *, created: bool = False, fields: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Return the namespaces a user write touches: owners only when products show it."""
    if created:
        return (NAMESPACE_USERS,)
    if fields is not None and set(fields) <= {"last_login", "password"}:
        return (NAMESPACE_USERS,)
    return (NAMESPACE_USERS, NAMESPACE_OWNERS)


_bulk_updating: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bulk_updating", default=False
)


class InvalidatingQuerySetMixin:
    """Bump ``cache_namespaces`` after commit on QuerySet writes (they send no signals).

    Put it before ``models.QuerySet`` in the bases. ``delete()`` keeps Django's
    single DELETE statement when no model depends on the rows, although the
    model has post_delete receivers (the cache's own, which this bump replaces).
    """

    cache_namespaces: tuple[str, ...] = ()

    def cache_namespaces_written(
        self,
        *,
        created: bool = False,
        fields: Iterable[str] | None = None,
        pks: Iterable[Any] | None = None,
    ) -> tuple[str, ...]:
        """Return the namespaces a write invalidates.

        *created*: rows were only inserted; *fields*: the columns written
        (None: unknown); *pks*: the rows written (None: unknown).
        """
        return self.cache_namespaces

    def _bump(self, **kwargs: Any) -> None:
        names = self.cache_namespaces_written(**kwargs)
        if names:
            bump_on_commit(*names, using=self.db)  # type: ignore[attr-defined]

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)  # type: ignore[misc]
        if rows and not _bulk_updating.get():
            self._bump(fields=kwargs)
        return rows

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)  # type: ignore[misc]
        if created:
            if kwargs.get("update_conflicts") or kwargs.get("ignore_conflicts"):
                pks = [obj.pk for obj in created]
                self._bump(
                    fields=kwargs.get("update_fields"),
                    pks=None if None in pks else pks,
                )
            else:
                self._bump(created=True)
        return created

    def bulk_update(
        self, objs: Iterable[Any], fields: Iterable[str], *args: Any, **kwargs: Any
    ) -> int:
        objs = list(objs)
        fields = list(fields)
        # Django's bulk_update runs update() per batch: bump once, by row.
        token = _bulk_updating.set(True)
        try:
            rows = super().bulk_update(objs, fields, *args, **kwargs)  # type: ignore[misc]
        finally:
            _bulk_updating.reset(token)
        if rows:
            self._bump(fields=fields, pks=[obj.pk for obj in objs])
        return rows

    def delete(self) -> tuple[int, dict[str, int]]:
        model = self.model  # type: ignore[attr-defined]
        query = self.query  # type: ignore[attr-defined]
        if (
            model._meta.related_objects
            or query.is_sliced
            or query.distinct_fields
            or query.combinator
            or self._fields is not None  # type: ignore[attr-defined]
        ):
            result = super().delete()  # type: ignore[misc]
        else:
            # What Django does for a model nobody listens to: one DELETE.
            del_query = self._chain()  # type: ignore[attr-defined]
            del_query._for_write = True
            del_query.query.select_for_update = False
            del_query.query.select_related = False
            del_query.query.clear_ordering(force=True)
            using = del_query.db
            with transaction.mark_for_rollback_on_error(using):
                count = del_query._raw_delete(using)
            self._result_cache = None
            result = (count, {model._meta.label: count} if count else {})
        if result[0]:
            self._bump()
        return result
