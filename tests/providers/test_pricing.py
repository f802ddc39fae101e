"""Pricing rows: the shipped list, import/export (JSON, CSV, LiteLLM), history, unpriced deployments."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from providers.models import PricingRow
from providers.pricing.formats import PricingFormatError, dump_csv, dump_json, parse_csv, parse_json
from providers.pricing.selectors import deployments_unpriced
from providers.pricing.services import pricing_import, pricing_import_file, pricing_load_seed, seed_entries

LITELLM = b"""{
  "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers"},
  "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
             "cache_read_input_token_cost": 1.25e-06, "litellm_provider": "openai", "mode": "chat"},
  "claude-3-5-haiku-20241022": {"input_cost_per_token": 8e-07, "output_cost_per_token": 4e-06,
             "cache_creation_input_token_cost": 1e-06, "cache_read_input_token_cost": 8e-08,
             "cache_creation_input_token_cost_above_1hr": 1.6e-06,
             "litellm_provider": "anthropic", "mode": "chat"},
  "groq/llama-3.1-8b-instant": {"input_cost_per_token": 5e-08, "output_cost_per_token": 8e-08,
             "litellm_provider": "groq", "mode": "chat"},
  "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo": {"input_cost_per_token": 8.8e-07,
             "output_cost_per_token": 8.8e-07, "litellm_provider": "together_ai", "mode": "chat"},
  "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0,
             "litellm_provider": "openai", "mode": "embedding"},
  "odd-model": {"input_cost_per_token": 1.23456789e-10, "output_cost_per_token": 1e-06,
             "litellm_provider": "openai", "mode": "chat"}
}"""


def test_litellm_prices_per_token_become_exact_prices_per_million() -> None:
    parsed = parse_json(LITELLM)
    by_key = {(e.vendor, e.model): e for e in parsed.entries}
    gpt = by_key[("openai", "gpt-4o")]
    assert (gpt.input_per_mtok, gpt.output_per_mtok, gpt.cached_input_per_mtok) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
    )
    assert gpt.cache_write_per_mtok is None
    haiku = by_key[("anthropic", "claude-3-5-haiku-20241022")]
    assert haiku.cache_write_per_mtok == Decimal("1") and haiku.cached_input_per_mtok == Decimal("0.08")
    assert haiku.cache_write_1h_per_mtok == Decimal("1.6") and gpt.cache_write_1h_per_mtok is None
    assert by_key[("groq", "llama-3.1-8b-instant")].output_per_mtok == Decimal("0.08")
    assert ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo") in by_key
    # embeddings are not chat models; a price that does not fit 6 decimals is skipped, never rounded
    assert ("openai", "text-embedding-3-small") not in by_key
    assert ("openai", "odd-model") not in by_key
    # the model is named once in its skip message
    assert [s for s in parsed.skipped if s.startswith("odd-model")] == [
        "odd-model: input has more than 6 decimals: 0.000123456789000000"
    ]
    assert all(isinstance(e.input_per_mtok, Decimal) for e in parsed.entries)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"rows": [{"vendor": "x"}]}',
        b'[{"vendor": "x", "model": "m", "input_per_mtok": "-1", "output_per_mtok": "1"}]',
    ],
)
def test_bad_price_files_are_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(PricingFormatError):
        parse_json(raw)


def test_csv_needs_its_columns() -> None:
    with pytest.raises(PricingFormatError, match="input_per_mtok"):
        parse_csv("vendor,model\nopenai,gpt-4o\n")


@pytest.mark.django_db
def test_litellm_import_is_idempotent_and_bumps_the_config_version() -> None:
    from gatewaysite.config.notice import read_version

    before = read_version()
    first = pricing_import_file(name="model_prices_and_context_window.json", content=LITELLM)
    assert first.created == 4
    assert read_version() > before
    again = pricing_import_file(name="model_prices_and_context_window.json", content=LITELLM)
    assert again.created == 0 and again.unchanged == 4
    assert PricingRow.objects.count() == 4


@pytest.mark.django_db
def test_a_changed_price_adds_a_row_and_keeps_history() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pricing_import_file(name="prices.json", content=LITELLM, at=t0)
    cheaper = json.loads(LITELLM)
    cheaper["gpt-4o"]["input_cost_per_token"] = 2e-06
    result = pricing_import_file(name="prices.json", content=json.dumps(cheaper).encode(), at=t0 + timedelta(days=30))
    assert result.created == 1 and result.unchanged == 3
    rows = list(PricingRow.objects.filter(vendor="openai", model="gpt-4o").order_by("effective_from"))
    assert [r.input_per_mtok for r in rows] == [Decimal("2.5"), Decimal("2")]
    # "now" is the write time plus the notice every process needs to see a new price
    assert rows[1].effective_from == t0 + timedelta(days=30, seconds=2)


@pytest.mark.django_db
def test_import_refuses_to_rewrite_a_price_in_effect(make_price: Any) -> None:
    make_price("openai", "gpt-4o", "2.50", "10.00")
    csv_text = (
        "vendor,model,input_per_mtok,output_per_mtok,effective_from\nopenai,gpt-4o,1.00,4.00,2024-01-01T00:00:00Z\n"
    )
    result = pricing_import(entries=parse_csv(csv_text).entries)
    assert result.created == 0 and len(result.conflicts) == 1
    assert PricingRow.objects.get(vendor="openai", model="gpt-4o").input_per_mtok == Decimal("2.50")


@pytest.mark.django_db
def test_csv_and_json_exports_import_back_to_nothing_new(make_price: Any, tmp_path: Path) -> None:
    make_price("openai", "gpt-4o", "2.50", "10.00", cached_input_per_mtok=Decimal("1.25"), source="test 2026-11-26")
    make_price("anthropic", "claude-sonnet-4", "3", "15", cache_write_per_mtok=Decimal("3.75"))
    rows = list(PricingRow.objects.all())
    csv_rows = parse_csv(dump_csv(rows)).entries
    json_rows = parse_json(dump_json(rows)).entries
    assert csv_rows == json_rows
    assert pricing_import(entries=csv_rows).created == 0
    assert pricing_import(entries=json_rows).created == 0
    for name in ("prices.csv", "prices.json"):
        call_command("pricing", "export", str(tmp_path / name))
        call_command("pricing", "import", str(tmp_path / name))
    assert PricingRow.objects.count() == 2


@pytest.mark.django_db
def test_management_command_imports_litellm_layout(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_bytes(LITELLM)
    call_command("pricing", "import", str(path))
    assert "4 created" in capsys.readouterr().out
    call_command("pricing", "import", str(path))
    assert "0 created" in capsys.readouterr().out


REQUIRED = {
    "openai": [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-4",
        "gpt-3.5-turbo",
    ],
    "azure": ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4"],
    "anthropic": ["claude-sonnet-4", "claude-opus-4", "claude-3-5-haiku", "claude-sonnet-4-20250514"],
    "gemini": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash"],
    "mistral": ["mistral-large-latest", "mistral-small-latest"],
    "groq": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
    "together": ["meta-llama/Llama-3.3-70B-Instruct-Turbo"],
    "deepseek": ["deepseek-chat", "deepseek-reasoner"],
    "mock": ["mock-gpt", "gpt-4"],
}


def test_shipped_prices_cover_every_provider_with_source_and_date() -> None:
    entries = seed_entries()
    keys = {(e.vendor, e.model) for e in entries}
    for vendor, models in REQUIRED.items():
        for model in models:
            assert (vendor, model) in keys, f"{vendor}/{model} has no shipped price"
    for entry in entries:
        assert entry.effective_from is not None
        assert re.search(r"\d{4}-\d{2}-\d{2}", entry.source), entry
        # embedding models have input tokens only
        assert entry.output_per_mtok > 0 or ("embed" in entry.model and entry.output_per_mtok == 0), entry
    embeddings = {(e.vendor, e.model) for e in entries if "embed" in e.model}
    for vendor in ("openai", "azure", "gemini", "mistral", "mock"):
        assert any(v == vendor for v, _ in embeddings), f"no shipped embedding price for {vendor}"
    azure = {e.model: e for e in entries if e.vendor == "azure"}
    openai = {e.model: e for e in entries if e.vendor == "openai"}
    assert all(azure[m].same_prices(openai[m]) for m in ("gpt-4o", "gpt-4.1", "gpt-4"))


@pytest.mark.django_db
def test_shipped_prices_load_once_and_price_o3_by_date() -> None:
    from importlib import import_module

    from django.conf import settings
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.test import override_settings

    migration = import_module("providers.migrations.0002_seed_pricing")
    # The models as that migration sees them (ConfigVersion still in the routing app then).
    state_apps = MigrationLoader(connection).project_state(("providers", "0002_seed_pricing")).apps
    with override_settings(GATEWAY={**settings.GATEWAY, "SEED_PRICING": True}):
        migration.load_prices(state_apps, None)
        migration.load_prices(state_apps, None)
    assert PricingRow.objects.count() == len(seed_entries())
    assert pricing_load_seed().created == 0
    from providers.models import Deployment, Provider
    from routing.config.loader import load_snapshot

    provider = Provider.objects.create(name="oa", kind="openai", vendor="openai", base_url="http://127.0.0.1:9/v1")
    Deployment.objects.create(name="oa-o3", model_name="o3", provider=provider, provider_model="o3")
    snapshot = load_snapshot(1)
    dep = snapshot.deployments_by_name["oa-o3"]
    assert snapshot.price_for(dep, datetime(2025, 5, 1, tzinfo=UTC)).output_per_mtok == Decimal("40")
    assert snapshot.price_for(dep, datetime(2025, 7, 1, tzinfo=UTC)).output_per_mtok == Decimal("8")
    assert snapshot.price_for(dep, datetime(2025, 3, 1, tzinfo=UTC)) is None


@pytest.mark.django_db
def test_unpriced_deployments(make_provider: Any, make_deployment: Any, make_price: Any) -> None:
    up = make_provider("up", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(up, "gpt-4o")
    make_deployment(up, "gpt-4o-mini")
    plain = make_provider("plain", kind="mock")  # no vendor: priced as its kind
    make_deployment(plain, "mock-gpt")
    make_price("openai", "gpt-4o", "2.5", "10")
    make_price("mock", "mock-gpt", "1", "2")
    make_price("openai", "gpt-4o-mini", "0.15", "0.6", effective_from=datetime(2999, 1, 1, tzinfo=UTC))
    assert [d.name for d in deployments_unpriced()] == ["up-gpt-4o-mini"]  # a future price does not count yet


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_superuser("boss", "", "pw-123456")
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_cannot_edit_or_delete_a_price_in_effect(staff_client: Any, make_price: Any) -> None:
    row = make_price("openai", "gpt-4o", "2.50", "10.00")
    url = f"/admin/providers/pricingrow/{row.pk}/change/"
    page = staff_client.get(url)
    assert page.status_code == 200
    assert b'name="input_per_mtok"' not in page.content  # read-only
    assert b"Add a new price" in page.content
    staff_client.post(
        url,
        {
            "vendor": "openai",
            "model": "gpt-4o",
            "input_per_mtok": "1.00",
            "output_per_mtok": "1.00",
            "effective_from_0": "2024-01-01",
            "effective_from_1": "00:00:00",
            "source": "edited note",
        },
    )
    row.refresh_from_db()
    assert row.input_per_mtok == Decimal("2.50") and row.output_per_mtok == Decimal("10.00")
    assert row.source == "edited note"  # the note may change, the price may not
    assert staff_client.post(f"/admin/providers/pricingrow/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert PricingRow.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
def test_admin_can_correct_a_scheduled_price(staff_client: Any, make_price: Any) -> None:
    row = make_price("openai", "gpt-4o", "2.50", "10.00", effective_from=datetime(2999, 1, 1, tzinfo=UTC))
    response = staff_client.post(
        f"/admin/providers/pricingrow/{row.pk}/change/",
        {
            "vendor": "openai",
            "model": "gpt-4o",
            "input_per_mtok": "2.00",
            "output_per_mtok": "8.00",
            "effective_from_0": "2999-01-01",
            "effective_from_1": "00:00:00",
            "source": "",
        },
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.input_per_mtok == Decimal("2.00")


@pytest.mark.django_db
def test_admin_csv_import_export_and_unpriced_warning(
    staff_client: Any, make_provider: Any, make_deployment: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    up = make_provider("up", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(up, "gpt-4o")
    page = staff_client.get("/admin/providers/pricingrow/")
    assert b"up-gpt-4o" in page.content and b"no price in effect" in page.content
    csv_text = b"vendor,model,input_per_mtok,output_per_mtok,cached_input_per_mtok,cache_write_per_mtok,effective_from,source\nopenai,gpt-4o,2.5,10,1.25,,2025-01-01,OpenAI 2025-08-01\n"
    response = staff_client.post(
        "/admin/providers/pricingrow/import/", {"file": SimpleUploadedFile("prices.csv", csv_text)}
    )
    assert response.status_code == 302
    assert PricingRow.objects.get().cached_input_per_mtok == Decimal("1.25")
    staff_client.post("/admin/providers/pricingrow/import/", {"file": SimpleUploadedFile("prices.csv", csv_text)})
    assert PricingRow.objects.count() == 1
    page = staff_client.get("/admin/providers/pricingrow/")
    assert b"no price in effect" not in page.content
    export = staff_client.get("/admin/providers/pricingrow/export/")
    assert export["content-type"].startswith("text/csv")
    assert b"openai,gpt-4o,2.5,10,1.25,,,2025-01-01T00:00:00Z" in export.content
    bad = staff_client.post("/admin/providers/pricingrow/import/", {"file": SimpleUploadedFile("x.txt", b"zzz")})
    assert bad.status_code == 200 and b".json or .csv" in bad.content
    assert staff_client.get("/admin/providers/pricingrow/unpriced/").status_code == 200


@pytest.mark.django_db
def test_migration_gives_shipped_rows_their_one_hour_price_and_leaves_others_alone() -> None:
    from importlib import import_module

    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    migration = import_module("providers.migrations.0005_money_cache_write_1h")
    # The models as that migration sees them (ConfigVersion still in the routing app then).
    state_apps = MigrationLoader(connection).project_state(("providers", "0005_money_cache_write_1h")).apps
    shipped = next(e for e in seed_entries() if (e.vendor, e.model) == ("anthropic", "claude-sonnet-4"))
    assert shipped.cache_write_1h_per_mtok == Decimal("6.00") == 2 * shipped.input_per_mtok
    fields = {
        "cached_input_per_mtok": shipped.cached_input_per_mtok,
        "cache_write_per_mtok": shipped.cache_write_per_mtok,
    }
    as_shipped = PricingRow.objects.create(
        vendor="anthropic",
        model="claude-sonnet-4",
        input_per_mtok=shipped.input_per_mtok,
        output_per_mtok=shipped.output_per_mtok,
        effective_from=shipped.effective_from,
        **fields,
    )
    own = PricingRow.objects.create(  # the operator's own price for the same model: not the shipped row
        vendor="anthropic",
        model="claude-sonnet-4",
        input_per_mtok=Decimal("2.5"),
        output_per_mtok=shipped.output_per_mtok,
        effective_from=shipped.effective_from + timedelta(days=1),
        **fields,
    )
    migration.fill_one_hour_prices(state_apps, None)
    as_shipped.refresh_from_db()
    own.refresh_from_db()
    assert as_shipped.cache_write_1h_per_mtok == Decimal("6") and own.cache_write_1h_per_mtok is None
