"""The deadlines and output limits are configuration: validated, exported and imported."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from providers.models import Deployment, Provider
from routing.services.config_io import ConfigImportError, gateway_config_export, gateway_config_import

pytestmark = pytest.mark.django_db


def test_deadlines_and_output_limits_round_trip_through_the_config_document(
    make_provider: Any, make_deployment: Any
) -> None:
    provider = make_provider(
        "up", base_url="http://127.0.0.1:1/v1", response_timeout=30.0, first_chunk_timeout=5.0, stream_idle_timeout=2.5
    )
    make_deployment(provider, "gpt-4o-mini", context_window=128000, max_output_tokens=16384)
    document = gateway_config_export()
    (exported,) = document["providers"]
    assert (exported["response_timeout"], exported["first_chunk_timeout"], exported["stream_idle_timeout"]) == (
        30.0,
        5.0,
        2.5,
    )
    assert document["deployments"][0]["max_output_tokens"] == 16384

    document["providers"][0]["stream_idle_timeout"] = 9
    document["deployments"][0]["max_output_tokens"] = 4096
    gateway_config_import(document=document)
    assert Provider.objects.get().stream_idle_timeout == 9.0
    assert Deployment.objects.get().max_output_tokens == 4096

    document["providers"][0]["first_chunk_timeout"] = 0
    with pytest.raises(ConfigImportError, match="first_chunk_timeout"):
        gateway_config_import(document=document)


def test_new_providers_get_the_documented_defaults() -> None:
    provider = Provider(name="p", kind="openai", base_url="https://api.openai.com/v1")
    assert (provider.response_timeout, provider.first_chunk_timeout, provider.stream_idle_timeout) == (600, 120, 60)
    provider.stream_idle_timeout = -1
    with pytest.raises(ValidationError) as raised:
        provider.full_clean()
    assert "stream_idle_timeout" in raised.value.message_dict
