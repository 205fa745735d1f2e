"""Whether the read replica may serve a read: alive, and current with the last write.

Every committed write that invalidates cached responses records the primary's
WAL position (``pg_current_wal_lsn()``) in Redis before its namespace versions
change (``note_committed_write``, called where ``config.cache.namespaces`` bumps).
A read that may be cached (a cache fill, a memo load) or that starts a request
asks ``read_alias()``: the replica serves it only when its replay position
(``pg_last_wal_replay_lsn()``) has reached the recorded one, so a copy older
than a write whose new version the reader has seen is never read, let alone
cached. The replica's position is remembered per process and asked again only
when a newer write is recorded; a replica found behind is left alone for
``DB_REPLICA_LAG_RECHECK`` seconds, one that fails (stopped, unreachable) for
``DB_REPLICA_RETRY_AFTER`` seconds, so each costs at most one try per interval
and the read itself goes to the primary in the same request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from config.cache.backend import REDIS_FAILURES, last_operation_failed
from config.metrics import CACHE_ERRORS, REPLICA_READS

logger = logging.getLogger(__name__)

REPLICA_DB_ALIAS = "replica"
WRITE_LSN_KEY = "db:write_lsn"
# Raise the recorded position, never lower it: writers record out of order.
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
_CURRENT_LSN_SQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAY_LSN_SQL = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


def replica_configured() -> bool:
    """Return whether a replica alias is configured."""
    return REPLICA_DB_ALIAS in connections.settings


@dataclass
class _ReplicaState:
    """What this process knows of the replica (shared by its threads).

    One server: the replay position only moves forward, so the highest one
    seen holds for every connection. DATABASE_REPLICA_URL must therefore name
    one standby, not a balancer over several that may differ.
    """

    replayed: int = -1  # highest replay position seen
    down_until: float = float("-inf")
    behind_until: float = float("-inf")
    last: str = "unknown"


_state = _ReplicaState()
_lock = threading.Lock()


def _primary_lsn() -> int:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(_CURRENT_LSN_SQL)
        return int(cursor.fetchone()[0])


def _raise_recorded_lsn(lsn: int) -> bool:
    """Raise the recorded write position to *lsn*; return whether Redis took it."""
    client_of = getattr(getattr(cache, "client", None), "get_client", None)
    if client_of is None:
        return True  # no Redis: read_alias() asks the primary itself
    name = cache.make_key(WRITE_LSN_KEY)
    try:
        client_of(write=True).eval(_RAISE_TO, 1, name, lsn)
    except REDIS_FAILURES as exc:
        CACHE_ERRORS.labels(operation="write_lsn").inc()
        logger.warning("could not record the write position: %s", exc)
        return False
    # This process's copy of the key goes when Redis's invalidation message
    # arrives: the bump that follows waits for it (await_invalidations).
    return True


def note_committed_write() -> bool:
    """Record the primary's WAL position after a commit; False when it could not.

    Call it after commit and before the namespace versions of the write
    change, so a reader that sees a new version also sees a position at or
    past the write. Free without a replica.
    """
    if not replica_configured() or _remote_apply():
        return True
    try:
        lsn = _primary_lsn()
    except DatabaseError as exc:
        logger.warning("could not read the primary's write position: %s", exc)
        return False
    return _raise_recorded_lsn(lsn)


def _required_lsn() -> int | None:
    """Return the position a current replica has replayed, or None if unknown."""
    if getattr(getattr(cache, "client", None), "get_client", None) is None:
        return _primary_lsn()  # no shared record: the primary's position now
    found = cache.get_many([WRITE_LSN_KEY])
    if last_operation_failed():
        return None
    recorded = found.get(WRITE_LSN_KEY)
    if recorded is None:
        # No write since Redis started: every commit so far is at or before
        # the primary's position now; record it for every process.
        recorded = _primary_lsn()
        if not _raise_recorded_lsn(recorded):
            return None
    return int(recorded)


def _remote_apply() -> bool:
    return bool(getattr(settings, "DB_REPLICA_REMOTE_APPLY", False))


def _mark_down(exc: BaseException) -> None:
    connection = connections[REPLICA_DB_ALIAS]
    with contextlib.suppress(DatabaseError):
        connection.close()
    with _lock:
        first = _state.last != "down"
        _state.down_until = time.monotonic() + settings.DB_REPLICA_RETRY_AFTER
        _state.last = "down"
    if first:
        logger.warning("read replica unavailable, reading from the primary: %s", exc)


def _connected() -> bool:
    """Return whether this thread's replica connection works (one ping per request)."""
    connection = connections[REPLICA_DB_ALIAS]
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError as exc:
        _mark_down(exc)
        return False
    return True


def _replay_lsn() -> int | None:
    """Ask the replica how far it has replayed (None: it is not a standby)."""
    with connections[REPLICA_DB_ALIAS].cursor() as cursor:
        cursor.execute(_REPLAY_LSN_SQL)
        value = cursor.fetchone()[0]
    return None if value is None else int(value)


def _choose() -> tuple[str, str]:
    """Return (alias, reason) for a read that must see every recorded write."""
    now = time.monotonic()
    if now < _state.down_until:
        return DEFAULT_DB_ALIAS, "down"
    if _remote_apply():
        if _connected():
            return REPLICA_DB_ALIAS, "current"
        return DEFAULT_DB_ALIAS, "down"
    required = _required_lsn()  # a primary failure: the request's 503
    if required is None:
        return DEFAULT_DB_ALIAS, "unknown"
    if _state.replayed >= required:
        if not _connected():
            return DEFAULT_DB_ALIAS, "down"
        _state.last = "ok"
        return REPLICA_DB_ALIAS, "current"
    if now < _state.behind_until:
        return DEFAULT_DB_ALIAS, "lagging"
    if not _connected():
        return DEFAULT_DB_ALIAS, "down"
    try:
        replayed = _replay_lsn()
    except DatabaseError as exc:
        _mark_down(exc)
        return DEFAULT_DB_ALIAS, "down"
    with _lock:
        if replayed is None:
            _state.behind_until = now + settings.DB_REPLICA_RETRY_AFTER
            _state.last = "not a standby"
            return DEFAULT_DB_ALIAS, "not_standby"
        _state.replayed = max(_state.replayed, replayed)
        if _state.replayed >= required:
            _state.last = "ok"
            return REPLICA_DB_ALIAS, "current"
        _state.behind_until = now + settings.DB_REPLICA_LAG_RECHECK
        _state.last = "lagging"
    return DEFAULT_DB_ALIAS, "lagging"


def read_alias() -> str:
    """Return the alias that may serve a read needing every recorded write; count it."""
    if not replica_configured():
        return DEFAULT_DB_ALIAS
    alias, reason = _choose()
    REPLICA_READS.labels(target=alias, reason=reason).inc()
    return alias


def replica_state() -> dict[str, object]:
    """Return the replica's state for /readyz, asked now (never fails readiness)."""
    if not replica_configured():
        return {"replica": "not configured"}
    connection = connections[REPLICA_DB_ALIAS]
    try:
        connection.close_if_health_check_failed()
        replayed = _replay_lsn()
    except DatabaseError as exc:
        _mark_down(exc)
        return {"replica": "down"}
    with _lock:
        _state.down_until = float("-inf")
    if replayed is None:
        return {"replica": "not a standby"}
    with _lock:
        _state.replayed = max(_state.replayed, replayed)
    try:
        required = None if _remote_apply() else _required_lsn()
    except DatabaseError:
        required = None
    if required is None or replayed >= required:
        return {"replica": "ok", "replica_lag_bytes": 0}
    return {"replica": "lagging", "replica_lag_bytes": required - replayed}
