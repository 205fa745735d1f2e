import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from psycopg import sql


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database when it does not exist yet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options) -> None:
        params = connections[options["database"]].get_connection_params()
        name = params.pop("dbname")
        for key in (
            "pool",
            "cursor_factory",
            "context",
            "prepare_threshold",
            "options",
        ):
            params.pop(key, None)
        try:
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [name]
                ).fetchone()
                if exists:
                    self.stdout.write(f"Database {name!r} exists.", self.style.SUCCESS)
                    return
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise CommandError(f"Cannot reach PostgreSQL: {exc}") from exc
        self.stdout.write(f"Created database {name!r}.", self.style.SUCCESS)
