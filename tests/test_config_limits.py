"""Deployment rate limits in the ``gateway_config`` document, and key limits from ``issue_key``."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import ClientKey
from providers.models import Deployment
from routing.services.config_io import ConfigImportError, gateway_config_export, gateway_config_import

pytestmark = pytest.mark.django_db


def test_deployment_limits_round_trip_through_the_document(make_provider: Any, make_deployment: Any) -> None:
    make_deployment(make_provider("up", base_url="http://127.0.0.1:9/v1"), "gpt-4o", rpm_limit=500, tpm_limit=30_000)
    document = gateway_config_export()
    entry = document["deployments"][0]
    assert entry["rpm_limit"] == 500 and entry["tpm_limit"] == 30_000

    entry["rpm_limit"] = 900
    entry["tpm_limit"] = None
    report = gateway_config_import(document=document)
    assert report.changed
    dep = Deployment.objects.get()
    assert (dep.rpm_limit, dep.tpm_limit) == (900, None)

    entry["rpm_limit"] = -1
    with pytest.raises(ConfigImportError):
        gateway_config_import(document=document)
    entry["rpm_limit"] = "lots"
    with pytest.raises(ConfigImportError):
        gateway_config_import(document=document)
    assert Deployment.objects.get().rpm_limit == 900


def test_issue_key_sets_limits(db: None) -> None:
    out = StringIO()
    call_command("issue_key", "--name", "cli", "--rpm", "60", "--tpm", "10000", stdout=out)
    key = ClientKey.objects.get(name="cli")
    assert (key.rpm_limit, key.tpm_limit) == (60, 10_000)
