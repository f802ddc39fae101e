"""Extended statistics on the rollups' key columns, so grouped reports aggregate by hash.

A report grouped by key groups on (client_key_id, key_name, key_prefix). Without
statistics on how these columns go together, Postgres multiplies their distinct counts,
expects hundreds of thousands of groups where there are hundreds, and sorts every rollup
row of the range on disk (docs/scaling.md has the figures). ``ndistinct`` statistics
give it the true number of groups. Postgres only; ``ANALYZE`` (autovacuum) fills them.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = (
    "CREATE STATISTICS IF NOT EXISTS usage_usagerollup_key_ndistinct (ndistinct) "
    "ON client_key_id, key_name, key_prefix FROM usage_usagerollup",
    "CREATE STATISTICS IF NOT EXISTS usage_usagerollup_cell_ndistinct (ndistinct) "
    "ON team, provider, model FROM usage_usagerollup",
)
DROP = (
    "DROP STATISTICS IF EXISTS usage_usagerollup_key_ndistinct",
    "DROP STATISTICS IF EXISTS usage_usagerollup_cell_ndistinct",
)


def _run(statements: tuple[str, ...]) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("usage", "0008_scale_partitions")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
