"""Writers wait (bounded) until every live process serves their change, and say when one does not.

Server processes are stood in for by their acknowledgements in Redis (the two-worker
gunicorn tests in ``test_config_propagation_processes.py`` use real ones).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from gatewaysite.config.propagation import ACKS, FORGET_AFTER, acknowledge, process_id, wait_for_propagation
from gatewaysite.models import ConfigVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def short_bound() -> Any:
    with override_settings(GATEWAY={**settings.GATEWAY, "CONFIG_PROPAGATION_SECONDS": 0.5}):
        yield


def _version() -> int:
    return ConfigVersion.objects.get(pk=1).version


def _ack(client: Any, name: str, version: int, *, expires_in: float = 30.0) -> None:
    client.hset(ACKS, name, f"{version} {time.time() + expires_in}")


@pytest.fixture
def staff(client: Any, django_user_model: Any) -> Any:
    client.force_login(django_user_model.objects.create_superuser("boss", "", "pw-123456"))
    return client


def _add_provider(staff: Any, name: str) -> Any:
    return staff.post(
        "/admin/providers/provider/add/",
        {
            "name": name,
            "kind": "mock",
            "vendor": "",
            "base_url": "",
            "api_key": "",
            "api_key_env": "",
            "options": "{}",
            "connect_timeout": "5",
            "read_timeout": "120",
            "response_timeout": "600",
            "first_chunk_timeout": "120",
            "stream_idle_timeout": "60",
            "enabled": "on",
            "deployments-TOTAL_FORMS": "0",
            "deployments-INITIAL_FORMS": "0",
            "deployments-MIN_NUM_FORMS": "0",
            "deployments-MAX_NUM_FORMS": "1000",
        },
    )


def test_an_admin_save_names_a_process_that_has_not_caught_up(staff: Any, redis_client: Any) -> None:
    _ack(redis_client, "host:101:stuck", 0)  # alive (heartbeat fresh) but serving an old version
    _ack(redis_client, "host:102:dead", 0, expires_in=-5)  # stopped heart-beating: not waited for
    response = _add_provider(staff, "p1")
    assert response.status_code == 302, response.content[:3000]
    assert response["x-gateway-config-propagation"] == "incomplete"
    page = staff.get(response["location"])
    assert b"1 of 1 gateway processes had not acknowledged" in page.content and b"host:101:stuck" in page.content


def test_an_admin_save_waits_for_a_process_that_catches_up(staff: Any, redis_client: Any) -> None:
    _ack(redis_client, "host:103:slow", 0)

    def catch_up() -> None:  # the other process reloads a moment later and acknowledges
        time.sleep(0.2)
        version = ConfigVersion.objects.get(pk=1).version
        _ack(redis_client, "host:103:slow", version)

    helper = threading.Thread(target=catch_up)
    ConfigVersion.objects.update_or_create(pk=1, defaults={"version": 1})
    helper.start()
    response = _add_provider(staff, "p2")
    helper.join()
    assert response["x-gateway-config-propagation"] == "complete"
    page = staff.get(response["location"])
    assert b"had not acknowledged" not in page.content


def test_dead_processes_are_forgotten(redis_client: Any) -> None:
    from routing.services.settings import routing_strategy_set

    _ack(redis_client, "host:104:gone", 0, expires_in=-(FORGET_AFTER + 1))
    routing_strategy_set(strategy="balanced")
    result = wait_for_propagation()
    assert result is not None and result.complete and result.processes == 0
    assert not redis_client.hexists(ACKS, "host:104:gone")


def test_acknowledge_records_this_process(redis_client: Any) -> None:
    acknowledge(41)
    version, expires = redis_client.hget(ACKS, process_id()).decode().split()
    assert int(version) == 41 and float(expires) > time.time()
    assert wait_for_propagation(41).complete  # type: ignore[union-attr]
    assert not wait_for_propagation(42, timeout=0.1).complete  # type: ignore[union-attr]


def test_gateway_config_import_reports_propagation(redis_client: Any, tmp_path: Path, capsys: Any) -> None:
    _ack(redis_client, "host:105:stuck", 0)
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"routing": {"strategy": "cost"}}))
    call_command("gateway_config", "import", str(path))
    captured = capsys.readouterr()
    assert "Applied" in captured.out and "host:105:stuck" in captured.err
    _ack(redis_client, "host:105:stuck", _version() + 100)  # it caught up (and beyond what the import makes)
    path.write_text(yaml.safe_dump({"routing": {"strategy": "latency"}}))
    call_command("gateway_config", "import", str(path))
    assert "served by all 1 gateway processes" in capsys.readouterr().out
