"""Prices take effect at a known instant with notice, never retroactively; re-pricing is explicit and audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from gatewaysite.clock import now
from providers.models import PriceRepricing, PricingRow
from providers.pricing.formats import PriceEntry
from providers.pricing.services import PricingTimeError, pricing_import, pricing_row_delete, pricing_row_save
from usage.ingest import records_insert
from usage.models import UsageRecord

NOTICE = timedelta(seconds=2)  # GATEWAY_CONFIG_PROPAGATION_SECONDS


def _record(at: datetime, *, cost: str | None, row: PricingRow | None, key: int = 7) -> UsageRecord:
    [record] = records_insert(
        [
            UsageRecord(
                request_id=f"req_{uuid.uuid4().hex}",
                created_at=at,
                client_key_id=key,
                provider="up",
                model="gpt-4o",
                provider_model="gpt-4o",
                status="ok",
                prompt_tokens=1000,
                completion_tokens=100,
                cached_tokens=200,
                cost_usd=Decimal(cost) if cost is not None else None,
                pricing_row_id=row.pk if row else None,
            )
        ]
    )
    return record


def _entry(effective_from: datetime | None, price: str = "1") -> PriceEntry:
    return PriceEntry(
        vendor="openai",
        model="gpt-4o",
        input_per_mtok=Decimal(price),
        output_per_mtok=Decimal(price),
        effective_from=effective_from,
    )


@pytest.fixture
def billed(db: None, make_provider: Any, make_deployment: Any, make_price: Any) -> PricingRow:
    """A gateway with history: a price since 2024 and a request billed with it an hour ago."""
    provider = make_provider("up", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    row = make_price("openai", "gpt-4o", "2.5", "10", cached_input_per_mtok=Decimal("1.25"))
    _record(now() - timedelta(hours=1), cost="0.00325", row=row)
    return row


def test_now_means_the_write_time_plus_the_notice(billed: PricingRow) -> None:
    at = now()
    result = pricing_import(entries=[_entry(None)], at=at)
    assert result.created == 1 and result.effective_from == at + NOTICE
    assert PricingRow.objects.latest("effective_from").effective_from == at + NOTICE
    assert "take effect at" in result.summary()


def test_backdating_and_too_soon_are_refused_with_a_reason(billed: PricingRow) -> None:
    at = now()
    result = pricing_import(entries=[_entry(at - timedelta(minutes=5)), _entry(at + timedelta(seconds=1), "2")], at=at)
    assert result.created == 0 and len(result.conflicts) == 2
    backdated, too_soon = result.conflicts
    assert "in the past" in backdated and "pricing reprice" in backdated and "openai/gpt-4o" in backdated
    assert "too soon" in too_soon and "2 s" in too_soon
    assert PricingRow.objects.count() == 1
    # far enough ahead: accepted as given
    later = at + timedelta(minutes=1)
    assert pricing_import(entries=[_entry(later)], at=at).created == 1


def test_a_gateway_that_billed_nothing_takes_rows_of_any_date(db: None) -> None:
    result = pricing_import(entries=[_entry(datetime(2024, 1, 1, tzinfo=UTC))])
    assert result.created == 1 and not result.conflicts


def test_a_row_about_to_take_effect_is_frozen(billed: PricingRow) -> None:
    at = now()
    soon = PricingRow.objects.create(
        vendor="openai",
        model="gpt-4o",
        input_per_mtok=Decimal(3),
        output_per_mtok=Decimal(3),
        effective_from=at + timedelta(seconds=1),
    )
    with pytest.raises(PricingTimeError, match="cannot be deleted"):
        pricing_row_delete(row=soon, at=at)
    soon.input_per_mtok = Decimal(4)
    with pytest.raises(PricingTimeError, match="in effect"):
        pricing_row_save(row=soon, at=at)
    later = PricingRow.objects.create(
        vendor="openai",
        model="gpt-4o",
        input_per_mtok=Decimal(3),
        output_per_mtok=Decimal(3),
        effective_from=at + timedelta(minutes=5),
    )
    pricing_row_delete(row=later, at=at)  # still far enough ahead: a scheduled row may go
    assert not PricingRow.objects.filter(pk=later.pk).exists()


def test_gateway_config_import_refuses_backdated_prices(billed: PricingRow, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pricing": [
                    {
                        "vendor": "openai",
                        "model": "gpt-4o",
                        "input_per_mtok": "1",
                        "output_per_mtok": "1",
                        "effective_from": "2025-06-01T00:00:00Z",
                    }
                ]
            }
        )
    )
    with pytest.raises(CommandError, match="in the past.*pricing reprice"):
        call_command("gateway_config", "import", str(path))
    assert PricingRow.objects.count() == 1


# --- the admin -------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    client.force_login(django_user_model.objects.create_superuser("boss", "", "pw-123456"))
    return client


def _form(**fields: str) -> dict[str, str]:
    return {
        "vendor": "openai",
        "model": "gpt-4o",
        "input_per_mtok": "2",
        "output_per_mtok": "8",
        "source": "",
        **fields,
    }


def test_admin_add_form_does_not_prefill_a_time_and_empty_means_now(billed: PricingRow, staff_client: Any) -> None:
    page = staff_client.get("/admin/providers/pricingrow/add/?vendor=openai&model=gpt-4o")
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert form["vendor"].value() == "openai" and form["effective_from"].value() is None  # no stale time
    before = now()
    response = staff_client.post("/admin/providers/pricingrow/add/", _form())
    after = now()
    assert response.status_code == 302, response.content[:2000]
    row = PricingRow.objects.latest("effective_from")
    assert before + NOTICE <= row.effective_from <= after + NOTICE
    page = staff_client.get(response["location"])
    assert b"the new price takes effect at" in page.content


def test_admin_refuses_a_backdated_price(billed: PricingRow, staff_client: Any) -> None:
    response = staff_client.post(
        "/admin/providers/pricingrow/add/", _form(effective_from_0="2025-06-01", effective_from_1="00:00:00")
    )
    assert response.status_code == 200 and b"that is in the past" in response.content
    assert b"pricing reprice" in response.content
    assert PricingRow.objects.count() == 1


# --- the explicit re-pricing --------------------------------------------------------------------


def test_reprice_backdates_recosts_records_and_keeps_an_audit_entry(
    billed: PricingRow, tmp_path: Path, redis_client: Any, capsys: Any
) -> None:
    from usage.budgets import key_spend_counter
    from usage.cost import to_picodollars

    since = now() - timedelta(days=2)
    older = _record(since - timedelta(days=1), cost="0.00325", row=billed)  # before the new row: untouched
    recent = UsageRecord.objects.exclude(pk=older.pk).get()
    counter = key_spend_counter(7)
    redis_client.set(counter, to_picodollars(Decimal("0.0065")))
    path = tmp_path / "fix.csv"
    path.write_text(
        "vendor,model,input_per_mtok,output_per_mtok,cached_input_per_mtok,effective_from\n"
        f"openai,gpt-4o,2,8,1,{since.isoformat()}\n"
    )
    call_command("pricing", "reprice", str(path), "--reason", "list price cut applied late", "--dry-run")
    assert PricingRow.objects.count() == 1 and not PriceRepricing.objects.exists()
    assert "dry run" in capsys.readouterr().out
    with pytest.raises(CommandError):  # a plain import refuses it
        call_command("pricing", "import", str(path))

    call_command("pricing", "reprice", str(path), "--reason", "list price cut applied late")
    out = capsys.readouterr().out
    assert "1 usage record(s) re-costed" in out
    new_row = PricingRow.objects.latest("effective_from")
    recent.refresh_from_db()
    older.refresh_from_db()
    # 800 plain input at 2, 200 cached at 1, 100 output at 8, per million
    assert recent.cost_usd == Decimal("0.0026") and recent.pricing_row_id == new_row.pk
    assert older.cost_usd == Decimal("0.00325") and older.pricing_row_id == billed.pk
    audit = PriceRepricing.objects.get()
    assert audit.reason == "list price cut applied late" and audit.records_recosted == 1
    assert (audit.cost_before_usd, audit.cost_after_usd) == (Decimal("0.00325"), Decimal("0.0026"))
    assert audit.rows[0]["id"] == new_row.pk
    assert int(redis_client.get(counter)) == to_picodollars(Decimal("0.0065") - Decimal("0.00065"))
    assert not redis_client.keys("{gw}:budget:*")  # missing counters are not created (seeded when needed)
    # running it again adds nothing and changes nothing
    call_command("pricing", "reprice", str(path), "--reason", "again")
    assert "0 created" in capsys.readouterr().out and PricingRow.objects.count() == 2
    recent.refresh_from_db()
    assert recent.cost_usd == Decimal("0.0026")


def test_reprice_needs_a_reason(billed: PricingRow, tmp_path: Path) -> None:
    path = tmp_path / "fix.csv"
    path.write_text("vendor,model,input_per_mtok,output_per_mtok\nopenai,gpt-4o,2,8\n")
    with pytest.raises(CommandError, match="reason"):
        call_command("pricing", "reprice", str(path), "--reason", " ")


# --- the readers' side --------------------------------------------------------------------------


def test_readers_cannot_confirm_while_a_pricing_write_is_in_progress(db: None) -> None:
    from routing.config.notice import PRICING_LOCK, read_version_state

    assert read_version_state()[1] is True
    db_settings = connection.settings_dict
    with psycopg.connect(
        host=db_settings["HOST"] or "127.0.0.1",
        port=db_settings["PORT"] or 5432,
        user=db_settings["USER"],
        password=db_settings["PASSWORD"] or None,
        dbname=db_settings["NAME"],
    ) as writer:
        writer.execute("SELECT pg_advisory_xact_lock(%s)", [PRICING_LOCK])  # a writer's open transaction
        assert read_version_state()[1] is False
        writer.rollback()
    assert read_version_state()[1] is True


@pytest.mark.django_db(transaction=True)
def test_a_request_past_the_snapshot_horizon_is_priced_after_a_fresh_look(make_price: Any) -> None:
    """A process whose poller fell behind re-reads the version before pricing a request it cannot vouch for."""
    from routing.config.cache import ConfigCache
    from routing.config.snapshot import DeploymentInfo

    make_price("openai", "gpt-4o", "2.5", "10")
    cache = ConfigCache()
    cache._poll_started = cache._polling = True  # as in a server process, without the thread
    cache._notice = NOTICE
    cache.current()
    confirmed = cache._confirmed_at
    # Another process adds a price (no signal reaches this cache) and bumps the version.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO providers_pricingrow (vendor, model, input_per_mtok, output_per_mtok, currency, "
            "effective_from, source, created_at) VALUES ('openai', 'gpt-4o', 1, 1, 'USD', %s, '', %s)",
            [confirmed + NOTICE + timedelta(seconds=1), now()],
        )
        cursor.execute("UPDATE routing_configversion SET version = version + 1")
    deployment = DeploymentInfo.__new__(DeploymentInfo)
    object.__setattr__(deployment, "vendor", "openai")
    object.__setattr__(deployment, "provider_model", "gpt-4o")
    within = confirmed + NOTICE
    assert cache.pricing_snapshot(within).price_for(deployment, within).input_per_mtok == Decimal("2.5")
    later = confirmed + NOTICE + timedelta(seconds=5)
    assert cache.pricing_snapshot(later).price_for(deployment, later).input_per_mtok == Decimal("1")
    assert cache._confirmed_at > confirmed
