from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections

pytestmark = pytest.mark.django_db


def test_ensure_database_creates_a_missing_database_once(settings):
    name = "ensure_database_probe"
    params = connections["default"].get_connection_params()
    admin = {
        "host": params.get("host"),
        "port": params.get("port"),
        "user": params["user"],
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    settings.DATABASES["probe"] = {**settings.DATABASES["default"], "NAME": name}
    try:
        out = StringIO()
        call_command("ensure_database", database="probe", stdout=out)
        call_command("ensure_database", database="probe", stdout=out)
        assert f"Created database '{name}'" in out.getvalue()
        assert f"Database '{name}' exists" in out.getvalue()
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
