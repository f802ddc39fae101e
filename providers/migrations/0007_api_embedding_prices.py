"""Load the shipped embedding prices (added to providers/pricing/seed_prices.json).

The shipped price list is loaded idempotently (rows already present are left alone), so
this adds exactly the rows this version ships that a database does not have yet.
``GATEWAY_SEED_PRICING=0`` skips it, as it skips 0002.
"""

from django.conf import settings
from django.db import migrations
from django.db.models import F


def load_prices(apps, schema_editor):
    if not settings.GATEWAY.get("SEED_PRICING", True):
        return
    from providers.pricing.services import pricing_load_seed

    result = pricing_load_seed(model=apps.get_model("providers", "PricingRow"))
    if result.changed:
        version = apps.get_model("routing", "ConfigVersion")
        if not version.objects.filter(pk=1).update(version=F("version") + 1):
            version.objects.update_or_create(pk=1, defaults={"version": 1})


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0006_api_endpoint"),
        ("routing", "0002_singletons"),
    ]
    operations = [migrations.RunPython(load_prices, migrations.RunPython.noop)]
