"""One-hour cache writes get their own price column; the shipped rows get their price.

Rows loaded from the shipped list (providers/pricing/seed_prices.json) get the one-hour
price that list now carries, when the row is otherwise the shipped one (same vendor,
model, effective_from and prices). Until now one-hour writes were not told apart from
five-minute writes (no usage record has any), so filling the column re-prices nothing
already billed; it applies from this migration on. Rows of the operator's own are left
alone (empty: one-hour writes at the cache-write price), and so are rows that already
have the column set.
"""

from django.db import migrations, models
from django.db.models import F


def fill_one_hour_prices(apps, schema_editor):
    from providers.pricing.formats import PRICE_FIELDS
    from providers.pricing.services import seed_entries

    PricingRow = apps.get_model("providers", "PricingRow")
    shipped = {
        (e.vendor, e.model, e.effective_from): e for e in seed_entries() if e.cache_write_1h_per_mtok is not None
    }
    others = [name for name in PRICE_FIELDS if name != "cache_write_1h_per_mtok"]
    changed = 0
    for row in PricingRow.objects.filter(cache_write_1h_per_mtok__isnull=True, vendor__in={k[0] for k in shipped}):
        entry = shipped.get((row.vendor, row.model, row.effective_from))
        if entry is None or any(getattr(row, name) != getattr(entry, name) for name in others):
            continue
        row.cache_write_1h_per_mtok = entry.cache_write_1h_per_mtok
        row.save(update_fields=["cache_write_1h_per_mtok"])
        changed += 1
    if changed:
        version = apps.get_model("routing", "ConfigVersion")
        if not version.objects.filter(pk=1).update(version=F("version") + 1):
            version.objects.update_or_create(pk=1, defaults={"version": 1})


class Migration(migrations.Migration):

    dependencies = [
        ('providers', '0004_sec_encrypt_api_keys'),
        ('routing', '0002_singletons'),
    ]

    operations = [
        migrations.CreateModel(
            name='PriceRepricing',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('actor', models.CharField(max_length=150)),
                ('reason', models.TextField()),
                ('rows', models.JSONField(default=list, help_text='The pricing rows added (vendor, model, effective_from, id).')),
                ('records_recosted', models.PositiveIntegerField(default=0)),
                ('cost_before_usd', models.DecimalField(decimal_places=12, default=0, max_digits=24)),
                ('cost_after_usd', models.DecimalField(decimal_places=12, default=0, max_digits=24)),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddField(
            model_name='pricingrow',
            name='cache_write_1h_per_mtok',
            field=models.DecimalField(blank=True, decimal_places=6, help_text='One-hour cache writes (Anthropic ttl 1h); empty: the cache-write price.', max_digits=16, null=True),
        ),
        migrations.AlterField(
            model_name='pricingrow',
            name='cache_write_per_mtok',
            field=models.DecimalField(blank=True, decimal_places=6, help_text='Cache writes (Anthropic: five-minute writes); empty: the input price.', max_digits=16, null=True),
        ),
        migrations.RunPython(fill_one_hour_prices, migrations.RunPython.noop),
    ]
