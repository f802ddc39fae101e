"""``ConfigVersion`` moves from the routing app to the bottom layer, its table unchanged.

Only Django's idea of which app owns the model changes (``SeparateDatabaseAndState``):
the table ``routing_configversion``, its row and the triggers that bump it stay as they
are. ``routing/0006_layers_models_moved_out`` removes the routing side.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("routing", "0003_sec_config_triggers"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ConfigVersion",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("version", models.BigIntegerField(default=0)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={"db_table": "routing_configversion"},
                ),
            ],
            database_operations=[],
        ),
    ]
