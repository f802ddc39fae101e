"""The routing side of two moves: ``ConfigVersion`` to the bottom layer (``gatewaysite``),
latency samples and rollups to ``usage``. Tables are untouched (state only); the content
types are renamed so permissions (the ``operators`` group's latency views) follow.
"""

from django.db import migrations

MOVED = {"configversion": "gatewaysite", "latencysample": "usage", "latencyrollup": "usage"}


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if ContentType.objects.filter(app_label=app_label, model=model).exists():
            continue  # already created under its new app (post_migrate ran first): keep that one
        ContentType.objects.filter(app_label="routing", model=model).update(app_label=app_label)


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if not ContentType.objects.filter(app_label="routing", model=model).exists():
            ContentType.objects.filter(app_label=app_label, model=model).update(app_label="routing")


class Migration(migrations.Migration):

    dependencies = [
        ("routing", "0005_scale_sample_once"),
        ("gatewaysite", "0001_layers_config_version"),
        ("usage", "0010_layers_latency_models"),
        ("contenttypes", "0002_remove_content_type_name"),
        # Earlier migrations read the models under their old app: they run first.
        ("providers", "0007_api_embedding_prices"),
        ("accounts", "0003_sec_staff_groups"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="ConfigVersion"),
                migrations.DeleteModel(name="LatencySample"),
                migrations.DeleteModel(name="LatencyRollup"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
