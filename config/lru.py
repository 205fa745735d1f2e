"""A bounded, thread-safe mapping: the least recently used entry goes first.

The per-process memos of the hot paths (compiled lists, plan estimates,
values kept per namespace version) share it. ``config.cache.local_copies``
bounds its copies by bytes, not entries, and keeps its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class LRU[K: Hashable, V]:
    """At most *maxsize* entries; ``get`` and ``put`` make an entry the most recent."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """Return the value of *key*, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Keep *value* for *key*, dropping the least recently used beyond maxsize."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
