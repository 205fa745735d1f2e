"""The Redis cache backend: failures logged sparsely, counted, never raised."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django_prometheus.cache.backends.redis import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from config.cache.local_copies import LocalCopies, TrackedReader, registry
from config.metrics import CACHE_ERRORS

logger = logging.getLogger("config.cache")

REDIS_FAILURES = (RedisError, ConnectionInterrupted, OSError)
# django-redis's defaults: values are pickled (ints stored as digits), uncompressed.
_DEFAULT_SERIALIZER = "django_redis.serializers.pickle.PickleSerializer"
_DEFAULT_COMPRESSOR = "django_redis.compressors.identity.IdentityCompressor"


class FailureGate:
    """What this process remembers of Redis failures.

    A server that failed is skipped for ``CACHE_RETRY_AFTER`` seconds, so an
    unreachable one costs one socket timeout per interval, not one per call;
    failures are logged at most once per *log_interval*; each thread can ask
    whether its last cache operation failed.
    """

    def __init__(self, log_interval: float = 30.0) -> None:
        self.log_interval = log_interval
        self._lock = threading.Lock()
        self._open_until: dict[str, float] = {}
        self._last_logged = float("-inf")
        self._thread = threading.local()

    def skipping(self, server: str) -> bool:
        """Return whether *server* failed within the retry interval."""
        return time.monotonic() < self._open_until.get(server, 0.0)

    def failed(self, server: str, exc: BaseException | None = None) -> None:
        """Record a failure of *server* (*exc*: a new one, to log and time)."""
        self._thread.failed = True
        if exc is None:
            return
        now = time.monotonic()
        retry_after = float(getattr(settings, "CACHE_RETRY_AFTER", 5.0))
        with self._lock:
            self._open_until[server] = now + retry_after
            if now - self._last_logged < self.log_interval:
                return
            self._last_logged = now
        logger.warning(
            "cache unavailable, serving uncached: %s: %s", type(exc).__name__, exc
        )

    def succeeded(self) -> None:
        """Record that this thread's last operation reached Redis."""
        self._thread.failed = False

    def last_failed(self) -> bool:
        """Return whether this thread's last cache operation failed or was skipped."""
        return getattr(self._thread, "failed", False)

    def reset(self) -> None:
        """Forget every failure (a new server, or a test)."""
        with self._lock:
            self._open_until.clear()
            self._last_logged = float("-inf")
        self._thread.failed = False


failures = FailureGate()


def last_operation_failed() -> bool:
    """Return whether this thread's last cache operation failed or was skipped."""
    return failures.last_failed()


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
            if failures.skipping(self.location):
                failures.failed(self.location)
                CACHE_ERRORS.labels(operation=operation).inc()
                return _fallback(operation, default, args, kwargs)
            try:
                result = method(self, *args, **kwargs)
            except REDIS_FAILURES as exc:
                failures.failed(self.location, exc)
                CACHE_ERRORS.labels(operation=operation).inc()
                return _fallback(operation, default, args, kwargs)
            failures.succeeded()
            return result

        return wrapper

    return decorate


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
            registry.forget(
                client.make_key(key, version=version, prefix=prefix) for key in written
            )

    return wrapper


_slow_set = _forgetting(RedisCache.set)
_slow_add = _forgetting(RedisCache.add)
_slow_delete = _forgetting(RedisCache.delete)


def _set_command(
    name: str, encoded: Any, timeout: int | None, *flags: str
) -> tuple[Any, ...]:
    """Return the SET command of key *name* (made) to *encoded* for *timeout* s."""
    expiry = () if timeout is None else ("EX", int(timeout))
    return ("SET", name, encoded, *expiry, *flags)


class FailOpenRedisCache(RedisCache):
    """django-redis cache whose failures are logged sparsely, counted and never raised.

    ``get_many`` reads through this thread's ``TrackedReader``, so a value
    read before usually comes from local copies that Redis invalidates, with
    no round trip at all.
    """

    def __init__(self, server: str, params: dict) -> None:
        options = {**params.get("OPTIONS", {}), "IGNORE_EXCEPTIONS": False}
        # Errors must reach _fail_open, which counts and logs them.
        super().__init__(server, {**params, "OPTIONS": options})
        self.location = server
        self._raw_pickles = options.get(
            "SERIALIZER", _DEFAULT_SERIALIZER
        ) == _DEFAULT_SERIALIZER and (
            options.get("COMPRESSOR", _DEFAULT_COMPRESSOR) == _DEFAULT_COMPRESSOR
        )
        # One reader per thread (and per process: a fork starts afresh).
        self._readers = threading.local()

    get = _fail_open()(RedisCache.get)

    @_fail_open({})
    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict:
        """Return the values of *keys* that exist, from local copies or one MGET.

        The hot path of every cached read. It skips the client layers:
        checking a connection out of redis-py's pool and back in costs more
        CPU than the round trip itself (``make bench``, group ``localcache``).
        Each thread has a reader of its own, also when the backend is shared
        across threads (ASGI contexts).
        """
        keys = list(keys)
        if not keys:
            return {}
        names = [self.make_key(key, version=version) for key in keys]
        reader = self.reader()
        try:
            values = reader.mget(names)
        except RedisConnectionError:
            # A socket that Redis closed while idle (restart, timeout): one
            # more try on a new connection. A timeout is not retried.
            values = reader.mget(names)
        decode = self._decode
        return {
            key: decode(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    @_fail_open(False)
    def set_many_expiring(
        self,
        entries: dict[str, tuple[Any, int | None]],
        absent: dict[str, tuple[Any, int | None]] | None = None,
    ) -> bool:
        """Set each key of *entries* to (value, timeout in s or None) in one MULTI.

        ``set_many`` takes one timeout for all its keys: keys with different
        timeouts would take one round trip each. Each key of *absent* is set
        only if it does not exist (SET NX, outside the MULTI), in the same
        round trip: the versions drawn for entries computed under them.
        """
        absent = absent or {}
        names = [self.make_key(key) for key in entries]
        absent_names = [self.make_key(key) for key in absent]
        adds = [
            _set_command(name, self.client.encode(value), timeout, "NX")
            for name, (value, timeout) in zip(
                absent_names, absent.values(), strict=True
            )
        ]
        sets = [
            _set_command(name, self.client.encode(value), timeout)
            for name, (value, timeout) in zip(names, entries.values(), strict=True)
        ]
        try:
            if self._fast_writes():
                # One SET is atomic by itself.
                atomic = sets if len(sets) == 1 else [("MULTI",), *sets, ("EXEC",)]
                self._execute([*adds, *atomic])
            else:
                for key, (value, timeout) in absent.items():
                    _slow_add(self, key, value, timeout)
                pipe = self.client.get_client(write=True).pipeline(transaction=True)
                for command in sets:
                    pipe.execute_command(*command)
                pipe.execute()
        finally:
            registry.forget([*names, *absent_names])
        return True

    @_fail_open(set())
    def add_many_expiring(self, entries: dict[str, tuple[Any, int | None]]) -> set[str]:
        """Set each absent key of *entries* to (value, timeout in s or None).

        One round trip for all (each SET NX on its own, not a transaction);
        return the keys that were set.
        """
        if not self._fast_writes():
            return {
                key
                for key, (value, timeout) in entries.items()
                if _slow_add(self, key, value, timeout)
            }
        names = [self.make_key(key) for key in entries]
        commands = [
            _set_command(name, self.client.encode(value), timeout, "NX")
            for name, (value, timeout) in zip(names, entries.values(), strict=True)
        ]
        try:
            replies = self._execute(commands)
        finally:
            registry.forget(names)
        return {
            key
            for key, reply in zip(entries, replies, strict=True)
            if reply is not None
        }

    def _fast_writes(self) -> bool:
        """Return whether this thread's connection is on the server writes go to."""
        fast = getattr(self, "_writes_on_reader", None)
        if fast is None:
            write = self.client.get_client(write=True).connection_pool
            read = self.client.get_client(write=False).connection_pool
            fast = self._writes_on_reader = (
                write.connection_kwargs == read.connection_kwargs
            )
        return fast

    def _fast_writable(self, timeout: Any) -> bool:
        # No timeout, or one of a millisecond or more: django-redis turns the
        # others into deletes or existence checks.
        seconds = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        return self._fast_writes() and (seconds is None or seconds >= 0.001)

    def _fast_set(self, key: str, value: Any, timeout: Any, *, nx: bool) -> bool:
        seconds = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        name = self.make_key(key)
        command: tuple[Any, ...] = ("SET", name, self.client.encode(value))
        if seconds is not None:
            command += ("PX", int(seconds * 1000))
        if nx:
            command += ("NX",)
        try:
            (reply,) = self._execute([command])
        finally:
            registry.forget([name])
        return reply is not None  # None: NX found the key

    def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run *commands* at once on this thread's connection; return the replies."""
        reader = self.reader()
        try:
            return reader.execute(commands)
        except RedisConnectionError:
            # A socket that Redis closed while idle: once more, on a new one.
            # (Should Redis have run the commands and the reply been lost, an
            # add() repeated finds its own key: a lock then waits for its
            # timeout, and its waiters compute after LOCK_WAIT_SECONDS.)
            return reader.execute(commands)

    def reader(self) -> TrackedReader:
        """Return this thread's reader (made on first use, and again after a fork)."""
        reader = getattr(self._readers, "reader", None)
        if reader is None or reader.pid != os.getpid():
            pool = self.client.get_client(write=False).connection_pool
            max_bytes = int(getattr(settings, "CACHE_LOCAL_MAX_BYTES", 16 * 1024**2))
            reader = TrackedReader(
                pool.connection_class,
                pool.connection_kwargs,
                LocalCopies(max_bytes) if max_bytes > 0 else None,
                lease=float(getattr(settings, "CACHE_LOCAL_LEASE", 0.1)),
            )
            self._readers.reader = reader
        return reader

    def server_run_id(self) -> str | None:
        """Return the ``run_id`` of the Redis server this thread last read from.

        Redis draws a new one at every start, so it tells a restarted server
        (empty, or restored from its persistence files) from the one that
        stored the entries. None before this thread's first read.
        """
        reader = getattr(self._readers, "reader", None)
        return None if reader is None else reader.run_id

    def _decode(self, value: bytes) -> Any:
        # django-redis stores an int as its digits and anything else pickled
        # (b"\x80..."); its decode tries int() first, and int() of a long
        # byte string is slow to fail.
        if self._raw_pickles and value[:1] == b"\x80":
            return pickle.loads(value)  # noqa: S301 - our own cache entries
        return self.client.decode(value)

    @_fail_open(False)
    def await_invalidations(self) -> bool:
        """Return once Redis has sent out the invalidations of this thread's writes.

        Redis queues an invalidation message while it runs the write and
        writes it out before it reads further commands, so one more round trip
        after the write is enough: when PING is answered, every reader's
        invalidation is on its way (on one host: in its socket).
        """
        if self._fast_writes():
            return self._execute([("PING",)])[0] in (b"PONG", "PONG", True)
        return bool(self.client.get_client(write=True).ping())

    @_fail_open(False)
    def set(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        *args: Any,
        **kw: Any,
    ) -> bool:
        """Set *key*; on this thread's connection unless options need django-redis."""
        return self._write(_slow_set, key, value, timeout, args, kw, nx=False)

    @_fail_open(False)
    def add(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        *args: Any,
        **kw: Any,
    ) -> bool:
        """Set *key* if absent; on this thread's connection, as ``set``."""
        return self._write(_slow_add, key, value, timeout, args, kw, nx=True)

    def _write(
        self,
        slow: Callable[..., bool],
        key: str,
        value: Any,
        timeout: Any,
        args: tuple,
        kw: dict,
        *,
        nx: bool,
    ) -> bool:
        if args or kw or not self._fast_writable(timeout):
            return slow(self, key, value, timeout, *args, **kw)
        return self._fast_set(key, value, timeout, nx=nx)

    @_fail_open(False)
    def delete(self, key: str, *args: Any, **kw: Any) -> bool:
        """Delete *key*; on this thread's connection, as ``set``."""
        if args or kw or not self._fast_writes():
            return _slow_delete(self, key, *args, **kw)
        name = self.make_key(key)
        try:
            (deleted,) = self._execute([("DEL", name)])
        finally:
            registry.forget([name])
        return bool(deleted)

    set_many = _fail_open([])(_forgetting(RedisCache.set_many))
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
            registry.forget()

    def clear(self) -> None:
        """Delete this cache's keys only (not FLUSHDB: the Redis database is shared)."""
        self.delete_pattern("*")
