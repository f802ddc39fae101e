from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0002_ingest_bigint_deadletter"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="usagerecord",
            options={"permissions": [("view_cost_reports", "Can view cost reports")]},
        ),
    ]
