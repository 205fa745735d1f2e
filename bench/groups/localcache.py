"""localcache: the cache's hit path, local copies against redis-py's own.

A cached read is one MGET of three keys (the entry and two namespace
versions). Each way of reading them is timed in one process, in CPU and wall
microseconds per read (median of rounds):

- the project's reader (``FailOpenRedisCache.get_many``, local copies that
  Redis invalidates, ``config/cache/local_copies.py``);
- the same backend with local copies off (one MGET per read, own connection);
- a plain redis-py client (pool checkout per read, RESP2);
- redis-py's client-side caching (``protocol=3``, ``CacheConfig()``), which
  refuses servers before Redis 7.4: on an older one its floor is lowered in
  this process only, and the row says so.

``python -m bench.groups.localcache`` prints one JSON line; ``run`` starts it
with the bench environment (``Stack.env()``). No server is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Harness
from bench.report import Row
from bench.stack import ROOT

ROUNDS = 5
READS = 2_000
KEYS = ["bench-localcache:entry", "bench-localcache:ns:a", "bench-localcache:ns:b"]


def _time(read: Callable[[], Any]) -> tuple[float, float]:
    """Return the median (CPU us, wall us) per call of *read*."""
    cpu, wall = [], []
    for _ in range(ROUNDS):
        read()  # warm: fills the copies
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(READS):
            read()
        cpu.append((time.process_time() - c0) / READS * 1e6)
        wall.append((time.perf_counter() - w0) / READS * 1e6)
    return statistics.median(cpu), statistics.median(wall)


def measure() -> dict[str, Any]:
    """Time each way of reading KEYS; return the figures and notes."""
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.core.cache import caches
    from redis.cache import CacheConfig

    from config.cache.backend import FailOpenRedisCache

    params = settings.CACHES["default"]
    url = params["LOCATION"]
    plain = redis.Redis.from_url(url)
    plain.mset({key: b"\x80" + b"x" * 600 for key in KEYS})
    names = list(KEYS)
    results: dict[str, Any] = {}

    def backend(max_bytes: int) -> FailOpenRedisCache:
        settings.CACHE_LOCAL_MAX_BYTES = max_bytes
        return FailOpenRedisCache(url, params)

    copies = backend(16 * 1024 * 1024)
    results["local copies (config/cache/local_copies.py)"] = _time(
        lambda: copies.reader().mget(names)
    )
    uncopied = backend(0)
    results["own connection, no copies"] = _time(lambda: uncopied.reader().mget(names))
    results["redis-py pool, RESP2, no cache"] = _time(lambda: plain.mget(names))

    server = plain.info("server")
    version = str(server["redis_version"])
    notes = [f"Redis {version}"]
    floor = redis.connection.CacheProxyConnection.MIN_ALLOWED_VERSION
    if tuple(int(p) for p in version.split(".")[:2]) < (7, 4):
        # CLIENT TRACKING exists since 6.0; redis-py only refuses older servers.
        redis.connection.CacheProxyConnection.MIN_ALLOWED_VERSION = "6.0.0"
        notes.append(f"redis-py CacheConfig refuses Redis < {floor}; floor lowered")
    cached = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
    results["redis-py CacheConfig, RESP3"] = _time(lambda: cached.mget(names))

    # Freshness after another client's write and a PING (what a bump does).
    plain.set(KEYS[0], b"\x80new")
    plain.ping()
    fresh = {
        "local copies (config/cache/local_copies.py)": copies.reader().mget(names)[0]
        == b"\x80new",
        "redis-py CacheConfig, RESP3": cached.mget(names)[0] == b"\x80new",
    }
    plain.delete(*KEYS)
    caches.close_all()
    return {
        "rows": {name: list(figures) for name, figures in results.items()},
        "fresh": fresh,
        "notes": notes,
    }


def rows(env: dict[str, str], cwd: str) -> list[Row]:
    """Run the measurement in a child process; return one row per way of reading."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.groups.localcache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    base = found["rows"]["local copies (config/cache/local_copies.py)"][0]
    made = []
    for name, (cpu_us, wall_us) in found["rows"].items():
        notes = [f"{wall_us:.1f} us wall", *found["notes"]]
        if name in found["fresh"]:
            notes.append("fresh after a write" if found["fresh"][name] else "STALE")
        made.append(
            Row(
                f"cached read, 3 keys: {name}",
                rate=cpu_us,
                unit="us CPU/read",
                ratio=cpu_us / base,
                notes=notes,
            )
        )
    return made


def run(h: Harness, args: argparse.Namespace) -> None:
    """Time the cached read each way, in a child process; one row each."""
    for row in rows(h.stack.env(), str(ROOT)):
        h.add(row)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    print(json.dumps(measure()))
