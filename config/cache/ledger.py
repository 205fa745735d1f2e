"""A durable record of namespace bumps: none is lost with the process that wrote.

A bump asked for inside a transaction is written to PostgreSQL
(``config.models.CacheBump``) in that same transaction and delivered to
Redis after commit; its row is deleted once Redis has it, in batches (up to
``FORGET_BATCH`` rows, at most ``FORGET_AFTER`` seconds after delivery: one
DELETE per batch rather than one more transaction per write). A bump Redis
missed (paused, unreachable, restarting) stays recorded, and is replayed:

- by the process that missed it, on its next cache use after
  ``CACHE_RETRY_AFTER`` seconds;
- by every process, at most every ``CACHE_LEDGER_POLL`` seconds (one small
  query; 0 turns the poll off);
- by a management command before it exits (``manage.py``), for up to
  ``CACHE_INVALIDATION_WAIT`` seconds; if Redis still has not taken it, the
  command says so and exits non-zero.

A bump outside a transaction (autocommit: the write has already committed) is
delivered at once and recorded only if Redis misses it. A bump that cannot
even be recorded (PostgreSQL down too) is kept in this process's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import DatabaseError, connections, transaction

logger = logging.getLogger("config.cache")

# Beyond this many names, object namespaces collapse into their kind's
# EVERY_OBJECT one (see ``compact``), so a replay stays one small write.
MAX_NAMES = 1_000
REPLAY_BATCH = 500
# Delivered rows are deleted together: this many, or this long after the
# first was delivered. A poll deletes this process's delivered rows before it
# reads the table; one of another process's still waiting there is replayed
# once more (a bump repeated within a second, harmless).
FORGET_BATCH = 100
FORGET_AFTER = 1.0


def _table() -> str:
    from config.models import CacheBump  # noqa: PLC0415 - loaded with the app registry

    return CacheBump._meta.db_table


def compact(names: Iterable[str], every: Callable[[str], str | None]) -> set[str]:
    """Return *names*, with object namespaces folded into *every*'s if too many."""
    names = set(names)
    if len(names) <= MAX_NAMES:
        return names
    folded = set()
    for name in names:
        folded.add(every(name) or name)
    return folded


class BumpLedger:
    """Bumps recorded in PostgreSQL until Redis has them.

    *apply* gives namespaces new versions in Redis and returns whether Redis
    took them; *every* maps an object namespace to its kind's EVERY_OBJECT
    one (None for the others).
    """

    def __init__(
        self,
        apply: Callable[[Iterable[str]], bool],
        every: Callable[[str], str | None],
    ) -> None:
        self._apply = apply
        self._every = every
        self._lock = threading.Lock()
        self._memory: set[str] = set()  # bumps that could not be recorded
        self._owed = False  # this process missed a bump
        self._owed_rows = False  # ... and recorded it in PostgreSQL
        self._next = 0.0  # monotonic time of the next catch-up
        self._started = False
        self._delivered: dict[str, list[int]] = {}  # rows to delete, by alias
        self._forget_by = float("inf")  # monotonic time of the next deletion

    @property
    def owed(self) -> bool:
        """Return whether this process has a bump that Redis has not taken yet."""
        return self._owed

    def record(self, names: Iterable[str], *, using: str | None) -> int | None:
        """Record *names* in the current transaction of *using*; return the row id.

        None in autocommit: the write has committed already, and the bump is
        recorded only if its delivery fails.
        """
        alias = using or "default"
        connection = connections[alias]
        if not connection.in_atomic_block:
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {_table()} (names, created_at) "  # noqa: S608 - our table name
                "VALUES (%s, now()) RETURNING id",
                [sorted(compact(names, self._every))],
            )
            return cursor.fetchone()[0]

    def deliver(
        self, names: Iterable[str], row: int | None = None, using: str | None = None
    ) -> bool:
        """Give *names* new versions in Redis now; return whether Redis took them.

        Call it after commit. A bump Redis missed stays recorded (*row*), or
        is recorded now, and is replayed later.
        """
        names = tuple(names)
        try:
            delivered = self._apply(names)
        except Exception:  # noqa: BLE001 - a bump must never break the write
            logger.exception("cache bump of %s failed", ", ".join(names))
            delivered = False
        if delivered:
            if row is not None:
                self._delivered_row(row, using or "default")
            return True
        if row is None:
            self._keep(names, using=using)
        else:
            self._owed_rows = True
        self._owe()
        return False

    def catch_up(self, *, force: bool = False) -> None:
        """Replay the recorded bumps when due (see the module docstring)."""
        if not force and time.monotonic() < self._next:
            return
        if not self._started and not force:
            # A process's first cache use: the first poll is one interval on.
            self._started = True
            if not self._owed:
                self._next = time.monotonic() + self._poll_interval()
                return
        # This process's delivered rows first: they must not be replayed.
        self.forget_delivered(force=True)
        with self._lock:
            if not force and time.monotonic() < self._next:
                return
            self._next = time.monotonic() + self._poll_interval()
            memory = set(self._memory)
            # Inside a transaction the rows wait: a replay must not join it.
            rows = (
                self._recorded() if not connections["default"].in_atomic_block else None
            )
            names = set(memory)
            for _, recorded in rows or ():
                names.update(recorded)
            if names and not self._apply(compact(names, self._every)):
                self._owe_locked()
                return
            self._memory -= memory
            if rows is not None:
                self._owed_rows = len(rows) == REPLAY_BATCH  # more to come
            self._owed = self._owed_rows or bool(self._memory)
            if self._owed:
                self._next = 0.0
        if rows:
            self._forget([row_id for row_id, _ in rows], using="default")

    def _recorded(self) -> list[tuple[int, list[str]]] | None:
        """Return the oldest recorded bumps (None if PostgreSQL cannot say)."""
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    f"SELECT id, names FROM {_table()} ORDER BY id LIMIT %s",  # noqa: S608 - our table name
                    [REPLAY_BATCH],
                )
                return cursor.fetchall()
        except (DatabaseError, RuntimeError) as exc:
            logger.warning("cannot read recorded cache bumps: %s", exc)
            return None

    def finish(self, wait: float) -> str | None:
        """Deliver what this process owes within *wait* s; else say what is missing.

        Management commands call it before they exit (``manage.py``).
        """
        self.forget_delivered(force=True)
        deadline = time.monotonic() + wait
        while self._owed:
            self.catch_up(force=True)
            if not self._owed or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if not self._owed:
            return None
        return (
            "Cache invalidation failed: Redis did not take this command's "
            f"namespace bumps within {wait:g} s (CACHE_INVALIDATION_WAIT). The "
            "writes are committed and the bumps are recorded in PostgreSQL "
            f"({_table()}): API workers apply them once Redis "
            "answers (within CACHE_LEDGER_POLL seconds). Until then cached reads "
            "may be stale; to apply them now: `python manage.py shell -c "
            '"from config.cache.namespaces import ledger; '
            'ledger.catch_up(force=True)"`.'
        )

    def reset(self) -> None:
        """Forget what this process owes (the rows stay recorded)."""
        with self._lock:
            self._memory.clear()
            self._owed = self._owed_rows = self._started = False
            self._next = 0.0
            self._delivered.clear()
            self._forget_by = float("inf")

    def _poll_interval(self) -> float:
        poll = float(getattr(settings, "CACHE_LEDGER_POLL", 5.0))
        retry = float(getattr(settings, "CACHE_RETRY_AFTER", 5.0))
        if self._owed:
            return min(poll, retry) if poll > 0 else retry
        return poll if poll > 0 else float("inf")

    def _owe(self) -> None:
        with self._lock:
            self._owe_locked()

    def _owe_locked(self) -> None:
        self._owed = True
        self._next = min(
            self._next,
            time.monotonic() + float(getattr(settings, "CACHE_RETRY_AFTER", 5.0)),
        )

    def _keep(self, names: tuple[str, ...], *, using: str | None) -> None:
        """Record a bump Redis missed (in memory if PostgreSQL fails too)."""
        connection = connections[using or "default"]
        try:
            if connection.in_atomic_block:
                raise DatabaseError("inside a transaction: it could roll back")
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {_table()} (names, created_at) "  # noqa: S608 - our table name
                    "VALUES (%s, now())",
                    [sorted(compact(names, self._every))],
                )
            self._owed_rows = True
        except (DatabaseError, RuntimeError):
            with self._lock:
                self._memory = compact(self._memory | set(names), self._every)

    def _delivered_row(self, row: int, using: str) -> None:
        with self._lock:
            self._delivered.setdefault(using, []).append(row)
            if self._forget_by == float("inf"):
                self._forget_by = time.monotonic() + FORGET_AFTER
            due = sum(map(len, self._delivered.values())) >= FORGET_BATCH
        self.forget_delivered(force=due)

    def forget_delivered(self, *, force: bool = False) -> None:
        """Delete the rows this process delivered, when a batch is due (or *force*)."""
        if not force and time.monotonic() < self._forget_by:
            return
        with self._lock:
            batches = [
                (alias, rows)
                for alias, rows in self._delivered.items()
                if rows and not connections[alias].in_atomic_block
            ]
            for alias, _ in batches:
                del self._delivered[alias]
            if not any(self._delivered.values()):
                self._forget_by = float("inf")
        for alias, rows in batches:
            self._forget(rows, using=alias)

    def _forget(self, rows: list[int], *, using: str | None) -> None:
        """Delete delivered rows (a row left behind costs one more bump later)."""
        connection = connections[using or "default"]
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as c:
                c.execute(
                    f"DELETE FROM {_table()} WHERE id = ANY(%s)",  # noqa: S608 - our table name
                    [rows],
                )
        except (DatabaseError, RuntimeError) as exc:
            logger.warning("cannot delete delivered cache bumps: %s", exc)
