"""Postgres: usage records partitioned by month, raw latency samples by day (usage/partitions.py).

The tables are rebuilt as partitioned tables with the same columns, indexes and rows,
then the hourly usage rollups are computed from the records already there. SQLite (the
embedded default) keeps plain tables.
"""

from django.db import migrations


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from usage.partitions import convert_all

    with schema_editor.connection.cursor() as cursor:
        convert_all(cursor)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from usage.partitions import unconvert_all

    with schema_editor.connection.cursor() as cursor:
        unconvert_all(cursor)


def rollups(apps, schema_editor):  # type: ignore[no-untyped-def]
    from usage.rollups import rollup_rebuild_all

    models = (apps.get_model("usage", "UsageRecord"), apps.get_model("usage", "UsageRollup"))
    rollup_rebuild_all(using=schema_editor.connection.alias, models=models)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0007_scale_rollup"),
        ("routing", "0005_scale_sample_once"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.RunPython(rollups, migrations.RunPython.noop),
    ]
