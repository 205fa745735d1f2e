#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    """Run administrative tasks; a configuration or database error is one line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import OperationalError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        sys.exit(f"ImproperlyConfigured: {exc}")
    except OperationalError as exc:
        if "--traceback" in sys.argv:
            raise
        sys.exit(database_error_line(exc))
    finally:
        lost = lost_invalidations()
    if lost:
        sys.exit(1)


def lost_invalidations() -> str | None:
    """Wait for the cache bumps this command owes Redis; say so if they never land.

    Its writes are committed, so the command cannot undo them: exiting
    non-zero with the reason is how it tells that cached reads may be stale.
    """
    from django.apps import apps

    if not apps.ready:
        return None
    from django.conf import settings

    from config.cache.namespaces import ledger

    lost = ledger.finish(float(getattr(settings, "CACHE_INVALIDATION_WAIT", 10.0)))
    if lost:
        sys.stderr.write(f"{lost}\n")
    return lost


def database_error_line(exc: BaseException) -> str:
    """Return one line saying why PostgreSQL refused, and what to do when known."""
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    reason = "; ".join(line for line in lines if line)
    reason = reason.removeprefix("connection failed: ")
    line = f"Database error: {reason}"
    if "does not exist" in reason and "database" in reason:
        line += " (create it with `manage.py ensure_database`)"
    return line


if __name__ == "__main__":
    main()
