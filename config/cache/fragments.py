"""Objects' rendered fragments, cached one per object under its namespace versions.

A list page of twenty objects is invalidated by every insert ahead of it, but
each of its objects' JSON changes only when that object (or what it embeds)
does. ``Fragments`` keeps every object's rendered JSON as an entry of its own,
stored and served exactly as ``get_or_compute`` keeps responses
(``versioned_entry``: the versions read before computing it, and its
expiry), so a page that misses its own entry is put together from the
fragments of its objects: one round trip to Redis for all of them, and the
database only for the objects whose fragment is missing or stale.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from django.conf import settings

from config.cache.namespaces import (
    read_many_versions,
    store_entries,
    versioned_entry,
    versioned_value,
)
from config.db_router import fresh_reads


class Fragments:
    """Rendered fragments of one kind of object, by primary key.

    *dependencies* names the namespaces one object's fragment depends on
    (as ``CachedViewMixin.cache_dependencies`` does for its detail);
    *render* returns the fragments of the objects whose primary keys it is
    given (in any order, as a dict), reading them from the database.
    """

    def __init__(
        self,
        kind: str,
        dependencies: Callable[[Any], tuple[str, ...]],
        render: Callable[[Sequence[Any]], dict[Any, bytes]],
        *,
        ttl_setting: str = "CACHE_TTL",
    ) -> None:
        self.kind = kind
        self.dependencies = dependencies
        self.render = render
        self.ttl_setting = ttl_setting

    def key(self, pk: Hashable) -> str:
        """Return the cache key of object *pk*'s fragment."""
        return f"frag:{settings.API_VERSION}:{settings.TIME_ZONE}:{self.kind}:{pk}"

    def get(self, pks: Sequence[Any]) -> list[bytes]:
        """Return the fragments of *pks*, in their order (each rendered at most once).

        Fragments found under their objects' current versions are served;
        the rest are rendered in one call and stored. With the cache down,
        all are rendered and nothing is stored.
        """
        if not pks:
            return []
        keys = [self.key(pk) for pk in pks]
        # A new object's version is drawn here and added with its fragment.
        drawn: dict[str, tuple[str, int | None]] = {}
        read = read_many_versions(
            keys, [self.dependencies(pk) for pk in pks], drawn=drawn
        )
        fragments: dict[Any, bytes] = {}
        stale: list[tuple[Any, str, tuple[str, ...] | None]] = []
        for index, (pk, key) in enumerate(zip(pks, keys, strict=True)):
            versions = None if read is None else read[0][index]
            entry = None if read is None else read[1].get(key)
            fragment = versioned_value(entry, versions)
            if fragment is not None:
                fragments[pk] = fragment
            else:
                stale.append((pk, key, versions))
        if stale:
            # Entered after reading the versions the fragments are stored
            # under: never from a replica behind a write whose bump they hold.
            with fresh_reads():
                rendered = self.render([pk for pk, _, _ in stale])
            timeout = getattr(settings, self.ttl_setting)
            store = {}
            for pk, key, versions in stale:
                fragment = rendered.get(pk)
                if fragment is None:
                    continue  # gone meanwhile: the caller decides what that means
                fragments[pk] = fragment
                if versions is not None:
                    store[key] = (versioned_entry(versions, fragment, timeout), timeout)
            if store:
                store_entries(store, drawn)
        return [fragments[pk] for pk in pks if pk in fragments]
