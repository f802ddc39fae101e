"""Database triggers that bump ConfigVersion on every write to a configuration table.

Django's signals (routing/config/invalidation.py) only see writes made through Django.
A key revoked or expired by a raw SQL UPDATE, or by another service writing the same
database, must stop working too: these triggers bump the same row, in the writer's
transaction, and every gateway process reloads on its next poll (0.5 s).

PostgreSQL: one row-level trigger per table (a statement that changes no row bumps
nothing) and a statement-level one for TRUNCATE. SQLite (the embedded default): one
trigger per table and operation, row-level (SQLite has no other kind; it has no
TRUNCATE).
"""

from django.db import migrations

TABLES = [
    "accounts_clientkey",
    "accounts_team",
    "providers_provider",
    "providers_deployment",
    "providers_pricingrow",
    "routing_routingrule",
    "routing_ruletarget",
    "routing_routingsettings",
]

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION gateway_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO routing_configversion (id, version, updated_at) VALUES (1, 1, now())
    ON CONFLICT (id) DO UPDATE SET version = routing_configversion.version + 1, updated_at = now();
    RETURN NULL;
END
$$;
"""

SQLITE_BUMP = (
    "INSERT INTO routing_configversion (id, version, updated_at) VALUES (1, 1, CURRENT_TIMESTAMP) "
    "ON CONFLICT (id) DO UPDATE SET version = version + 1, updated_at = CURRENT_TIMESTAMP;"
)


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
        for table in TABLES:
            schema_editor.execute(
                f"CREATE TRIGGER {table}_config_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION gateway_config_changed()"
            )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_config_truncated AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION gateway_config_changed()"
            )
    elif vendor == "sqlite":
        for table in TABLES:
            for operation in ("INSERT", "UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_config_{operation.lower()} AFTER {operation} ON {table} "
                    f"BEGIN {SQLITE_BUMP} END"
                )


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_config_changed ON {table}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_config_truncated ON {table}")
        schema_editor.execute("DROP FUNCTION IF EXISTS gateway_config_changed()")
    elif vendor == "sqlite":
        for table in TABLES:
            for operation in ("insert", "update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_config_{operation}")


class Migration(migrations.Migration):

    dependencies = [
        ("routing", "0002_singletons"),
        ("accounts", "0001_initial"),
        ("providers", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
