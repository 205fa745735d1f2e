"""Create the database cache table, so every command works without REDIS_URL.

Without REDIS_URL the settings use Django's database cache in the table
``django_cache``; creating it here (not only in ``make run``) means a plain
``manage.py migrate`` leaves a database every command can use. With Redis the
table stays empty.
"""

from django.core.management.commands.createcachetable import (
    Command as CreateCacheTable,
)
from django.db import migrations

TABLE = "django_cache"


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    # Skips a table that `manage.py createcachetable` already made.
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_cache_table, drop_cache_table)]
