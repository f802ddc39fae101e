"""``manage.py gateway_config export|import``: the configuration as a YAML/JSON document."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from providers.models import Deployment, PricingRow, Provider
from routing.models import ConfigVersion, RoutingRule, RoutingSettings, RuleTarget

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("gateway_config", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def wipe() -> None:
    RuleTarget.objects.all().delete()
    RoutingRule.objects.all().delete()
    Deployment.objects.all().delete()
    Provider.objects.all().delete()
    PricingRow.objects.all().delete()
    RoutingSettings.objects.all().delete()


@pytest.fixture
def configured(make_provider: Any, make_deployment: Any, make_price: Any) -> None:
    from accounts.services import team_get_or_create

    openai = make_provider(
        "openai",
        base_url="https://api.openai.com/v1",
        vendor="openai",
        api_key="",
        api_key_env="OPENAI_API_KEY",
        read_timeout=60.0,
    )
    azure = make_provider(
        "azure-eu",
        kind="azure",
        base_url="https://example-eu.openai.azure.com",
        vendor="openai",
        api_key="",
        api_key_env="AZURE_EU_KEY",
        options={"api_version": "2024-10-21"},
    )
    mock = make_provider("mock", kind="mock", api_key="", options={"latency_ms": 20}, enabled=False)
    make_deployment(openai, "gpt-4o", context_window=128000)
    make_deployment(azure, "gpt-4o", name="azure-eu-gpt-4o", provider_model="prod-gpt4o", priority=50, weight=3)
    make_deployment(openai, "gpt-4o-mini")
    make_deployment(mock, "mock-gpt", enabled=False)
    make_price("openai", "gpt-4o", "2.50", "10.00", cached_input_per_mtok=Decimal("1.25"), source="list price")
    make_price("openai", "gpt-4o", "5", "15", effective_from=datetime(2023, 5, 1, tzinfo=UTC))
    make_price("openai", "gpt-4o-mini", "0.15", "0.60")
    make_price("openai", "prod-gpt4o", "2.75", "11.00")
    rule = RoutingRule.objects.create(
        name="long-prompts-eu",
        priority=10,
        model_pattern="gpt-4o*",
        team=team_get_or_create(name="research"),
        min_input_tokens=2000,
        stream=False,
    )
    RuleTarget.objects.create(rule=rule, deployment=Deployment.objects.get(name="azure-eu-gpt-4o"), position=0)
    RuleTarget.objects.create(rule=rule, deployment=Deployment.objects.get(name="openai-gpt-4o"), position=1)
    other = RoutingRule.objects.create(name="beta-header", priority=20, header_name="x-beta", enabled=False)
    RuleTarget.objects.create(rule=other, deployment=Deployment.objects.get(name="openai-gpt-4o-mini"), position=0)
    RoutingSettings.objects.update_or_create(
        pk=1,
        defaults={"strategy": "model", "max_attempts": 2, "cooldown_seconds": 12.5, "allow_request_strategy": True},
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_export_wipe_import_export_is_identical(configured: None, tmp_path: Path, suffix: str) -> None:
    first = tmp_path / f"first{suffix}"
    second = tmp_path / f"second{suffix}"
    run("export", str(first))
    wipe()
    assert not Provider.objects.exists()
    output = run("import", str(first))
    assert "created provider openai" in output
    run("export", str(second))
    assert first.read_text() == second.read_text()

    rule = RoutingRule.objects.get(name="long-prompts-eu")
    assert [t.deployment.name for t in rule.targets.order_by("position")] == ["azure-eu-gpt-4o", "openai-gpt-4o"]
    assert rule.team.name == "research" and rule.stream is False and rule.min_input_tokens == 2000
    assert RoutingSettings.objects.get(pk=1).cooldown_seconds == 12.5
    price = PricingRow.objects.get(vendor="openai", model="gpt-4o", effective_from=datetime(2024, 1, 1, tzinfo=UTC))
    assert price.input_per_mtok == Decimal("2.5") and price.cached_input_per_mtok == Decimal("1.25")
    assert Provider.objects.get(name="azure-eu").options == {"api_version": "2024-10-21"}


def test_export_document_shape(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    text = path.read_text()
    assert text.startswith("# LLM gateway configuration")
    document = yaml.safe_load(text)
    assert list(document) == ["version", "routing", "providers", "deployments", "pricing", "rules"]
    assert document["routing"]["strategy"] == "model"
    openai = next(p for p in document["providers"] if p["name"] == "openai")
    assert openai["api_key_env"] == "OPENAI_API_KEY" and "api_key" not in openai
    # prices are exact decimal strings, times are UTC ISO 8601
    row = next(p for p in document["pricing"] if p["model"] == "gpt-4o-mini")
    assert row["input_per_mtok"] == "0.15" and row["effective_from"] == "2024-01-01T00:00:00Z"
    assert document["rules"][0]["targets"] == ["azure-eu-gpt-4o", "openai-gpt-4o"]
    assert "client_key" not in document["rules"][0]


def test_import_twice_changes_nothing(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    wipe()
    run("import", str(path))
    version = ConfigVersion.objects.get(pk=1).version
    stamps = dict(Provider.objects.values_list("name", "updated_at"))
    dep_stamps = dict(Deployment.objects.values_list("name", "updated_at"))
    target_ids = list(RuleTarget.objects.order_by("id").values_list("id", flat=True))

    output = run("import", str(path))
    assert output.startswith("No changes")
    assert ConfigVersion.objects.get(pk=1).version == version
    assert dict(Provider.objects.values_list("name", "updated_at")) == stamps
    assert dict(Deployment.objects.values_list("name", "updated_at")) == dep_stamps
    assert list(RuleTarget.objects.order_by("id").values_list("id", flat=True)) == target_ids


def test_import_updates_by_natural_key_and_bumps_the_config_version(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    run("export", str(path))
    document = json.loads(path.read_text())
    next(d for d in document["deployments"] if d["name"] == "openai-gpt-4o")["weight"] = 7
    document["rules"][0]["targets"] = ["openai-gpt-4o"]
    path.write_text(json.dumps(document))
    version = ConfigVersion.objects.get(pk=1).version

    output = run("import", str(path))
    assert "updated deployment openai-gpt-4o: weight" in output
    assert "updated rule long-prompts-eu: targets" in output
    assert Deployment.objects.get(name="openai-gpt-4o").weight == 7
    assert Deployment.objects.count() == 4  # matched, not duplicated
    assert ConfigVersion.objects.get(pk=1).version > version


def test_export_never_writes_a_stored_key(make_provider: Any, tmp_path: Path) -> None:
    make_provider("literal", base_url="https://llm.example/v1", api_key="sk-literal-secret-123")
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    text = path.read_text()
    assert "sk-literal-secret-123" not in text
    (entry,) = yaml.safe_load(text)["providers"]
    assert entry["api_key_stored"] is True and "api_key" not in entry
    # importing the export keeps the stored key (api_key absent = unchanged)
    assert run("import", str(path)).startswith("No changes")
    assert Provider.objects.get(name="literal").api_key == "sk-literal-secret-123"


def test_literal_key_in_a_document_is_accepted_and_can_be_cleared(tmp_path: Path, db: None) -> None:
    path = tmp_path / "gateway.yaml"
    entry = {"name": "p", "kind": "openai", "base_url": "https://llm.example/v1", "api_key": "sk-from-file"}
    path.write_text(yaml.safe_dump({"providers": [entry]}))
    run("import", str(path))
    assert Provider.objects.get(name="p").api_key == "sk-from-file"
    entry["api_key"] = None
    path.write_text(yaml.safe_dump({"providers": [entry]}))
    assert "updated provider p: api_key" in run("import", str(path))
    assert Provider.objects.get(name="p").api_key == ""


def test_env_var_credentials_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: None) -> None:
    from routing.config.cache import config_cache

    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-the-environment")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        """
providers:
  - name: upstream
    kind: openai
    vendor: openai
    base_url: https://llm.example/v1
    api_key_env: TEST_UPSTREAM_KEY
deployments:
  - {name: upstream-gpt-4o, model_name: gpt-4o, provider: upstream, provider_model: gpt-4o}
"""
    )
    run("import", str(path))
    provider = Provider.objects.get(name="upstream")
    assert provider.api_key == "" and provider.api_key_env == "TEST_UPSTREAM_KEY"
    snapshot = config_cache.current()
    assert snapshot.deployments_by_name["upstream-gpt-4o"].target.api_key == "sk-from-the-environment"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"deployments": [{"name": "d1", "model_name": "m", "provider": "nope", "provider_model": "m"}]},
            "deployments[0] ('d1'): provider 'nope' is not defined",
        ),
        (
            {"providers": [{"name": "x", "kind": "carrier-pigeon", "base_url": "https://a.b"}]},
            "providers[0] ('x'): kind",
        ),
        ({"providers": [{"name": "x", "kind": "openai"}]}, "providers[0] ('x'): base_url"),
        (
            {"providers": [{"name": "x", "kind": "mock", "colour": "red"}]},
            "providers[0] ('x'): unknown field(s) colour",
        ),
        ({"providers": [{"name": "x", "kind": "mock", "enabled": "yes"}]}, "'enabled' must be true or false"),
        (
            {
                "pricing": [
                    {
                        "vendor": "v",
                        "model": "m",
                        "input_per_mtok": "abc",
                        "output_per_mtok": "1",
                        "effective_from": "2024-01-01",
                    }
                ]
            },
            "pricing[0] ('m'): 'input_per_mtok' must be a decimal number",
        ),
        (
            {
                "pricing": [
                    {
                        "vendor": "v",
                        "model": "m",
                        "input_per_mtok": "-1",
                        "output_per_mtok": "1",
                        "effective_from": "2024-01-01",
                    }
                ]
            },
            "Prices cannot be negative",
        ),
        (
            {"rules": [{"name": "r", "priority": 1, "targets": ["ghost"]}]},
            "rules[0] ('r'): unknown deployment(s) in targets: ghost",
        ),
        ({"rules": [{"name": "r", "priority": 1}, {"name": "s", "priority": 1}]}, "rules[1] ('s'): the same priority"),
        ({"routing": {"strategy": "no-such-strategy"}}, "routing: strategy: Unknown strategy"),
        ({"providerz": []}, "unknown section(s) providerz"),
        ({"version": 2}, "version 2 is not supported"),
    ],
)
def test_invalid_entries_name_themselves_and_apply_nothing(
    document: dict[str, Any], message: str, tmp_path: Path, db: None
) -> None:
    # A valid provider first: it must not survive the failed import.
    document = (
        {"providers": [{"name": "first", "kind": "mock"}], **document} if "providers" not in document else document
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CommandError) as excinfo:
        run("import", str(path))
    assert message in str(excinfo.value)
    assert "Nothing was changed" in str(excinfo.value)
    assert not Provider.objects.filter(name="first").exists()


def test_unreadable_documents_are_command_errors(tmp_path: Path, db: None) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed")
    with pytest.raises(CommandError, match="not valid YAML"):
        run("import", str(bad))
    with pytest.raises(CommandError, match=r"\.yaml, \.yml or \.json"):
        run("export", str(tmp_path / "gateway.txt"))
    with pytest.raises(CommandError, match="No such file"):
        run("import", str(tmp_path / "missing.json"))


def test_rules_can_swap_priorities(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    document = yaml.safe_load(path.read_text())
    document["rules"][0]["priority"], document["rules"][1]["priority"] = 20, 10
    path.write_text(yaml.safe_dump(document))
    run("import", str(path))
    assert list(RoutingRule.objects.order_by("priority").values_list("name", flat=True)) == [
        "beta-header",
        "long-prompts-eu",
    ]


def test_a_priority_held_by_an_unlisted_rule_is_an_error(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"name": "newcomer", "priority": 10}]}))
    with pytest.raises(CommandError, match="priority 10 is taken by the rule 'long-prompts-eu'"):
        run("import", str(path))
    # with --prune the unlisted rules go, and the priority is free
    output = run("import", "--prune", str(path))
    assert "deleted rule long-prompts-eu" in output
    assert list(RoutingRule.objects.values_list("name", flat=True)) == ["newcomer"]
    assert Deployment.objects.count() == 4  # sections absent from the document are left alone


def test_prune_deletes_unlisted_providers_and_deployments(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    document = yaml.safe_load(path.read_text())
    document["providers"] = [p for p in document["providers"] if p["name"] != "mock"]
    document["deployments"] = [
        d for d in document["deployments"] if d["name"] not in ("mock-mock-gpt", "openai-gpt-4o-mini")
    ]
    document["rules"] = [r for r in document["rules"] if r["name"] != "beta-header"]
    path.write_text(yaml.safe_dump(document))
    assert run("import", str(path)).startswith("No changes")  # without --prune nothing is deleted
    output = run("import", "--prune", str(path))
    assert "deleted provider mock" in output and "deleted deployment openai-gpt-4o-mini" in output
    assert sorted(Provider.objects.values_list("name", flat=True)) == ["azure-eu", "openai"]
    assert PricingRow.objects.count() == 4  # pricing rows are history: never pruned


def test_dry_run_reports_and_changes_nothing(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    wipe()
    output = run("import", "--dry-run", str(path))
    assert "(dry run) created provider openai" in output
    assert not Provider.objects.exists()


def test_stdout_and_stdin(configured: None, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run("export", "-", "--format", "json")
    assert json.loads(text)["version"] == 1
    wipe()
    monkeypatch.setattr("sys.stdin", StringIO(text))
    run("import", "-", "--format", "json")
    assert Provider.objects.count() == 3


def test_the_shipped_example_imports(db: None) -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "gateway-config.example.yaml"
    run("import", str(example))
    assert Provider.objects.exists() and RoutingRule.objects.exists()
    assert run("import", str(example)).startswith("No changes")


def test_the_documented_example_is_the_shipped_file() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    text = (docs / "configuration.md").read_text()
    block = text.split("### A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load((docs / "gateway-config.example.yaml").read_text())


def test_a_price_in_effect_is_never_rewritten(configured: None, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    document = yaml.safe_load(path.read_text())
    row = next(p for p in document["pricing"] if p["model"] == "gpt-4o-mini")
    row["output_per_mtok"] = "0.75"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CommandError, match=r"pricing\[\d\] \('gpt-4o-mini'\): output_per_mtok differ"):
        run("import", str(path))
    # the way to change a price: a new entry with a later effective_from
    row["output_per_mtok"] = "0.60"
    document["pricing"].append({**row, "output_per_mtok": "0.75", "effective_from": "2099-01-01T00:00:00Z"})
    path.write_text(yaml.safe_dump(document))
    assert "created price openai/gpt-4o-mini from 2099-01-01T00:00:00Z" in run("import", str(path))
    # a row not in effect yet may still be corrected
    document["pricing"][-1]["output_per_mtok"] = "0.80"
    path.write_text(yaml.safe_dump(document))
    assert "updated price openai/gpt-4o-mini from 2099-01-01T00:00:00Z: output_per_mtok" in run("import", str(path))


def test_rules_refer_to_client_keys_by_prefix(configured: None, issue_key: Any, tmp_path: Path) -> None:
    key, secret = issue_key("vip")
    rule = RoutingRule.objects.get(name="beta-header")
    rule.client_key = key
    rule.save()
    path = tmp_path / "gateway.yaml"
    run("export", str(path))
    text = path.read_text()
    assert f"client_key: gwk_{key.prefix}\n" in text and secret not in text
    wipe()
    run("import", str(path))
    assert RoutingRule.objects.get(name="beta-header").client_key == key
    document = yaml.safe_load(text)
    document["rules"][1]["client_key"] = "gwk_zzzzzzzz"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(
        CommandError, match=r"rules\[1\] \('beta-header'\): no client key with the prefix 'gwk_zzzzzzzz'"
    ):
        run("import", str(path))


@pytest.mark.django_db
def test_routing_options_of_the_new_strategies_round_trip() -> None:
    from routing.models import RoutingRule, RoutingSettings
    from routing.services.config_io import gateway_config_export, gateway_config_import

    document = {
        "routing": {
            "strategy": "cost-slo",
            "latency_slo_ms": 300,
            "allow_request_latency_slo": True,
            "hedge_enabled": True,
            "hedge_delay_ms": 120,
            "hedge_budget_percent": 8.0,
            "outlier_enabled": True,
            "outlier_consecutive_5xx": 4,
            "outlier_max_ejection_percent": 30,
        },
        "rules": [
            {
                "name": "slo",
                "priority": 1,
                "action": "strategy",
                "strategy": "cost-slo",
                "latency_slo_ms": 500,
                "hedge": False,
            }
        ],
    }
    report = gateway_config_import(document=document)
    assert report.changed
    settings = RoutingSettings.objects.get(pk=1)
    assert (settings.strategy, settings.latency_slo_ms, settings.hedge_delay_ms) == ("cost-slo", 300, 120)
    assert settings.outlier_consecutive_5xx == 4 and settings.outlier_max_ejection_percent == 30
    rule = RoutingRule.objects.get(name="slo")
    assert rule.latency_slo_ms == 500 and rule.hedge is False
    exported = gateway_config_export()
    assert exported["routing"]["hedge_budget_percent"] == 8.0
    assert exported["rules"][0]["latency_slo_ms"] == 500 and exported["rules"][0]["hedge"] is False
    assert not gateway_config_import(document=exported).changed


@pytest.mark.django_db
def test_bad_routing_option_names_its_field() -> None:
    from routing.services.config_io import ConfigImportError, gateway_config_import

    with pytest.raises(ConfigImportError, match="hedge_budget_percent"):
        gateway_config_import(document={"routing": {"hedge_budget_percent": 150}})
