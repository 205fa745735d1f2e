"""Project Prometheus counters and the access-controlled /metrics view.

The counters are plain prometheus_client objects: under gunicorn,
PROMETHEUS_MULTIPROC_DIR (set by config/gunicorn.py before any worker imports
this module) makes every worker write them to shared files, and the /metrics
view sums the files, so a scrape is right whichever worker answers it.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
from functools import cache
from typing import Any

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import Counter, multiprocess

# --- Counters (import these; label values must stay low-cardinality) ---
CACHE_HITS = Counter(
    "app_cache_hits",
    "Cached GET responses served from Redis.",
    ["namespace"],
)
CACHE_MISSES = Counter(
    "app_cache_misses",
    "Cacheable GET responses rendered because Redis had no entry.",
    ["namespace"],
)
CACHE_ERRORS = Counter(
    "app_cache_errors",
    "Redis operations that failed and were served uncached.",
    ["operation"],
)
THROTTLED_REQUESTS = Counter(
    "app_throttled_requests",
    "Requests refused with 429 by a throttle.",
    ["scope"],
)
BULK_ROWS_WRITTEN = Counter(
    "app_bulk_rows_written",
    "Rows written by bulk API requests and import commands.",
    ["model", "operation"],
)
TASKS_ENQUEUED = Counter(
    "app_tasks_enqueued",
    "Background tasks enqueued.",
    ["task"],
)
DB_UNAVAILABLE = Counter(
    "app_db_unavailable",
    "Requests answered 503 because PostgreSQL failed or timed out.",
    ["reason"],
)
REPLICA_READS = Counter(
    "app_replica_reads",
    "Read decisions: target replica (reason current) or default, the primary"
    " (reason down, lagging, unknown or not_standby).",
    ["target", "reason"],
)


@cache
def _allowed_networks(spec: tuple[str, ...]) -> tuple[ipaddress._BaseNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def metrics_access_allowed(request: HttpRequest) -> bool:
    """Return whether *request* may read /metrics (allowed peer or bearer token)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return True
    # REMOTE_ADDR is the direct peer; X-Forwarded-For is client-controlled and
    # is deliberately ignored here (nginx refuses /metrics from outside).
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    networks = _allowed_networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    return any(peer in network for network in networks)


class WorkerFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, past workers' empty files.

    A worker creates its metrics file before sizing it: read in between (or
    left so by a worker killed then), the empty file fails the whole merge,
    a 500 for every scrape (prometheus/client_python#1199). An empty file
    holds no samples, so it is skipped.
    """

    def collect(self) -> Any:
        files = [
            path
            for path in glob.glob(os.path.join(self._path, "*.db"))
            if _size(path) > 0
        ]
        return self.merge(files, accumulate=True)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # removed meanwhile (a restart empties the directory)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Export the metrics of every worker process, to allowed callers only."""
    if not metrics_access_allowed(request):
        return JsonResponse(
            {"detail": "Metrics are only served to allowed networks or with a token."},
            status=403,
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        WorkerFilesCollector(registry)
    else:
        registry = prometheus_client.REGISTRY
    return HttpResponse(
        prometheus_client.generate_latest(registry),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
