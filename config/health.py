from __future__ import annotations

import logging

import psycopg
from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from config.replica import replica_state

logger = logging.getLogger(__name__)

# A readiness probe must answer fast; a query slower than this counts as down.
READY_QUERY_TIMEOUT_MS = 1000

_migrations_applied = False


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process is alive; no I/O."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when PostgreSQL is up and migrated and static files collected."""
    database = _database_state()
    migrations = _migration_state() if database == "ok" else "unknown"
    static = _static_state()
    ready = database == "ok" and migrations == "ok" and static == "ok"
    body = {
        "status": "ok" if ready else "unavailable",
        "database": database,
        "migrations": migrations,
        "static": static,
        # Redis down degrades to uncached service, so it never fails readiness.
        "redis": _redis_state(),
        # Nor does the read replica: reads fall back to the primary.
        **(replica_state() if database == "ok" else {}),
    }
    return JsonResponse(body, status=200 if ready else 503)


def _database_state() -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    if (
        connection.settings_dict["OPTIONS"].get("pool")
        and not connection.in_atomic_block
    ):
        return _pooled_database_state(connection)
    try:
        with transaction.atomic(using=DEFAULT_DB_ALIAS), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)",
                [str(READY_QUERY_TIMEOUT_MS)],
            )
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("readiness: database unavailable: %s", exc)
        # A broken persistent connection is dropped now rather than at the end
        # of the request, so the next probe reconnects.
        connection.close_if_unusable_or_obsolete()
        return "down"
    return "ok"


def _pooled_database_state(connection: BaseDatabaseWrapper) -> str:
    # Checking out through Django would wait DB_POOL_TIMEOUT (30 s) for a
    # connection while PostgreSQL is down; a probe waits one second at most.
    try:
        with connection.pool.connection(timeout=READY_QUERY_TIMEOUT_MS / 1000) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        logger.warning("readiness: database unavailable: %s", exc)
        return "down"
    return "ok"


def _migration_state() -> str:
    global _migrations_applied
    # Once applied, migrations stay applied for this process's code version;
    # only the negative answer is worth recomputing (the graph load is slow).
    if _migrations_applied:
        return "ok"
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        logger.warning("readiness: migration state unknown: %s", exc)
        return "unknown"
    if plan:
        return f"pending ({len(plan)})"
    _migrations_applied = True
    return "ok"


def _static_state() -> str:
    # Without collectstatic's manifest, every page that links a static file
    # (the admin, the API docs) is a 500: this process must not take traffic.
    if isinstance(staticfiles_storage, ManifestFilesMixin) and not (
        staticfiles_storage.hashed_files
    ):
        return "missing: no manifest in STATIC_ROOT (run collectstatic)"
    return "ok"


def _redis_state() -> str:
    backend = settings.CACHES["default"]["BACKEND"]
    if "redis" not in backend.lower():
        return "not configured"
    from django_redis import get_redis_connection

    try:
        get_redis_connection("default").ping()
    except Exception as exc:  # noqa: BLE001 - any Redis failure means "down"
        logger.warning("readiness: redis unavailable: %s", exc)
        return "down"
    return "ok"
