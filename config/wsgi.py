import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()


def _log_backends() -> None:
    """Say once per worker which database and cache this process serves from."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    embedded = "DATABASE_URL" not in os.environ
    cache = settings.CACHES["default"]
    cache_desc = (
        "Redis at " + cache["LOCATION"].rsplit("@", 1)[-1]
        if "redis" in cache["BACKEND"].lower()
        else f"PostgreSQL database cache (table {cache['LOCATION']})"
    )
    logging.getLogger("config.startup").info(
        "database: %sPostgreSQL %s/%s (%s); cache: %s",
        "embedded " if embedded else "",
        db["HOST"] or "localhost",
        db["NAME"],
        settings.DB_CONNECTIONS,
        cache_desc,
    )


_log_backends()
