from django.db import migrations


def create_rows(apps, schema_editor):
    apps.get_model("routing", "ConfigVersion").objects.get_or_create(pk=1, defaults={"version": 1})
    apps.get_model("routing", "RoutingSettings").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]
    operations = [migrations.RunPython(create_rows, migrations.RunPython.noop)]
