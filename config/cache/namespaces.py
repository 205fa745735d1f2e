"""Namespace versions: what a cached value depends on, and how writes invalidate it.

A cached value is stored with the versions of the namespaces it depends on
("products", "product:12", "users"...) and served only while they are still
current. A write bumps the version of its namespaces after commit, so every
older entry stops being served at once and is overwritten or expires; nothing
scans keys.
"""

from __future__ import annotations

import contextvars
import functools
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from config.cache.backend import last_operation_failed
from config.cache.ledger import BumpLedger
from config.lru import LRU
from config.replica import note_committed_write

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


def is_object_namespace(name: str) -> bool:
    """Return whether *name* is one object's namespace (not EVERY_OBJECT's)."""
    return ":" in name and not name.endswith(f":{EVERY_OBJECT}")


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
    if not is_object_namespace(name):
        return None
    return max(settings.CACHE_TTL, getattr(settings, "USER_CACHE_TTL", 0))


def _set_versions(names: Iterable[str]) -> bool:
    """Give each namespace of *names* a new version; return whether Redis failed."""
    entries = {
        _version_key(name): (_new_version(), _version_timeout(name)) for name in names
    }
    if hasattr(cache, "set_many_expiring"):
        cache.set_many_expiring(entries)
        return last_operation_failed()
    failed = False
    for version_key, (version, timeout) in entries.items():
        cache.set(version_key, version, timeout)
        failed = failed or last_operation_failed()
    return failed


def _apply(names: Iterable[str]) -> bool:
    """Give *names* new versions; return whether Redis took them.

    It returns once Redis has sent every other process's invalidation of its
    local copies of the versions.
    """
    # The write's WAL position first: a reader seeing a new version must not
    # fill it from a replica that has not replayed the write (config.replica).
    if not note_committed_write() or _set_versions(names):
        return False
    if hasattr(cache, "await_invalidations"):
        cache.await_invalidations()
    return True


def _every_object(name: str) -> str | None:
    if not is_object_namespace(name):
        return None
    return object_namespace(name.split(":", 1)[0])


ledger = BumpLedger(_apply, _every_object)


def bump_namespace(*names: str) -> bool:
    """Invalidate every cached response that depends on *names*, now.

    Call it after commit (see bump_on_commit); return whether Redis took the
    bump. A bump Redis missed is recorded and replayed (``config.cache.ledger``).
    """
    if not names:
        return True
    return ledger.deliver(names)


def bump_on_commit(*names: str, using: str | None = None) -> None:
    """Bump *names* once the current transaction commits (now in autocommit).

    Inside a transaction the bump is recorded in it (``config.cache.ledger``),
    so it survives a Redis that misses it and a process that dies after commit.
    """
    if not names:
        return
    row = ledger.record(names, using=using)
    transaction.on_commit(
        functools.partial(ledger.deliver, names, row, using), using=using
    )


def _server_run() -> str:
    """Return the run_id of the Redis server this thread reads ("" if none)."""
    run_id = getattr(cache, "server_run_id", None)
    return (run_id() if run_id is not None else None) or ""


def read_versions(
    key: str | None,
    names: Iterable[str],
    *,
    drawn: dict[str, tuple[str, int | None]] | None = None,
) -> tuple[tuple[str, ...] | None, Any]:
    """Return (the versions of *names*, the value at *key*) in one round trip.

    The versions are None when the cache is down. A version key that is
    missing (first use, eviction, a Redis restart) gets a new random value.
    The first of the versions is the Redis server's ``run_id``, new at every
    start of the server: a restarted Redis, empty or restored from its
    persistence files, may hold entries and versions from before bumps it
    missed while it was away, and none of them is served again. With
    *drawn*, see ``read_many_versions``.
    """
    read = read_many_versions([key] if key else [], [tuple(names)], drawn=drawn)
    if read is None:
        return None, None
    (versions,), found = read
    return versions, found.get(key) if key else None


def read_many_versions(
    keys: Sequence[str],
    names: Sequence[tuple[str, ...]],
    *,
    drawn: dict[str, tuple[str, int | None]] | None = None,
) -> tuple[list[tuple[str, ...]], dict[str, Any]] | None:
    """Return the versions of each tuple of *names*, and the values of *keys* found.

    ``read_versions`` for several entries at once: one round trip for all
    the keys and every version they depend on, and one more for all the
    version keys that were missing. None when the cache is down.

    With *drawn* (a dict), that second round trip is left to the caller for
    single objects' versions (a first read of an object): a missing one is
    drawn here and put in *drawn* (version key: (version, timeout)), for
    ``store_entries`` to add along with the entries computed under it. An
    entry whose version lost that race (another process added its own
    first, or a write bumped it) carries a version Redis does not hold, so
    it is never served: nothing stale can be.
    """
    ledger.catch_up()
    version_keys = {name: _version_key(name) for group in names for name in group}
    found = cache.get_many([*keys, *version_keys.values()])
    if last_operation_failed():
        return None
    missing = {
        k: (_new_version(), _version_timeout(name))
        for name, k in version_keys.items()
        if k not in found
    }
    if missing and drawn is not None:
        # One object's version only: a shared one may be read again, missing
        # still, by what the caller computes (a page reads its items'
        # fragments), which would draw another and make this entry unservable.
        for name, k in version_keys.items():
            if k in missing and is_object_namespace(name):
                drawn[k] = missing.pop(k)
                found[k] = drawn[k][0]
    if missing:
        added = (
            cache.add_many_expiring(missing)
            if hasattr(cache, "add_many_expiring")
            else {k for k, (v, t) in missing.items() if cache.add(k, v, t)}
        )
        if last_operation_failed():
            return None
        # What was added need not be read back; another process drew the rest.
        found.update((k, missing[k][0]) for k in added)
        raced = [k for k in missing if k not in added]
        if raced:
            found.update(cache.get_many(raced))
        if last_operation_failed() or any(k not in found for k in missing):
            return None
    run = _server_run()
    versions = [
        (run, *(found[version_keys[name]] for name in group)) for group in names
    ]
    return versions, found


def store_entries(
    entries: dict[str, tuple[Any, int]],
    drawn: dict[str, tuple[str, int | None]] | None = None,
) -> None:
    """Store *entries* (key: (entry, timeout in s)) in one round trip.

    The versions *drawn* for them (``read_many_versions``) are added in the
    same round trip, each only if its key is still absent.
    """
    if hasattr(cache, "set_many_expiring") and all(
        timeout >= 1 for _, timeout in entries.values()
    ):
        cache.set_many_expiring(entries, absent=drawn)
        return
    for key, (version, timeout) in (drawn or {}).items():
        cache.add(key, version, timeout)
    for key, (entry, timeout) in entries.items():
        cache.set(key, entry, timeout)


def versioned_entry(versions: tuple[str, ...], value: Any, timeout: int) -> tuple:
    """Return what to store for *value*, computed under *versions*, for *timeout* s.

    The entry carries its expiry time, so a local copy is not served past
    *timeout* even before Redis gets round to expiring the key.
    """
    return (versions, value, time.time() + timeout)


def versioned_value(entry: Any, versions: tuple[str, ...] | None) -> Any:
    """Return the value of a stored *entry* if *versions* still hold, else None."""
    if (
        isinstance(entry, tuple)
        and len(entry) == 3
        and entry[0] == versions
        and entry[2] > time.time()
    ):
        return entry[1]
    return None


def namespace_versions(*names: str) -> dict[str, str] | None:
    """Return the current version of each namespace, or None when the cache is down."""
    versions, _ = read_versions(None, names)
    return None if versions is None else dict(zip(names, versions[1:], strict=True))


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
        self._entries: LRU[Hashable, tuple[tuple[str, ...], Any]] = LRU(maxsize)

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the value for *key*, calling *load* unless a current one is kept.

        A None from *load* is returned and not kept.
        """
        versions, _ = read_versions(None, (self.namespace,))
        if versions is None:
            return load()
        version = versions  # the namespace's, and the server run's
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            return entry[1]
        # Loaded after the version was read: a write committed in between
        # bumps it again, so this value is never kept past a newer write.
        value = load()
        if value is not None:
            self._entries.put(key, (version, value))
        return value


_bulk_updating: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bulk_updating", default=False
)


class InvalidatingQuerySetMixin:
    """Bump ``cache_namespaces`` after commit on QuerySet writes (they send no signals).

    Put it before ``models.QuerySet`` in the bases. ``delete()`` is Django's:
    a single DELETE statement only for a model with no dependents and no
    delete signal receivers (so ``Product`` bumps from ``Product.delete()``).
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
        result = super().delete()  # type: ignore[misc]
        if result[0]:
            self._bump()
        return result
