"""A deployment declares what it serves; a public model name serves one endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from providers.models import Deployment

pytestmark = pytest.mark.django_db


def test_model_name_serves_one_endpoint(make_provider: Any, make_deployment: Any) -> None:
    up = make_provider("up", base_url="http://127.0.0.1:9/v1")
    make_deployment(up, "text-embedding-3-small", endpoint="embeddings")
    chat = Deployment(name="up-chat", model_name="text-embedding-3-small", provider=up, provider_model="x")
    with pytest.raises(ValidationError) as error:
        chat.full_clean()
    assert "endpoint" in error.value.message_dict


def test_anthropic_does_not_serve_embeddings(make_provider: Any) -> None:
    claude = make_provider("claude", kind="anthropic", base_url="http://127.0.0.1:9")
    dep = Deployment(name="c-emb", model_name="emb", provider=claude, provider_model="x", endpoint="embeddings")
    with pytest.raises(ValidationError) as error:
        dep.full_clean()
    assert "do not serve embeddings" in error.value.message_dict["endpoint"][0]


def test_config_export_import_keeps_the_endpoint(make_provider: Any, make_deployment: Any) -> None:
    from routing.services.config_io import gateway_config_export, gateway_config_import

    up = make_provider("up", base_url="http://127.0.0.1:9/v1")
    make_deployment(up, "text-embedding-3-small", endpoint="embeddings")
    make_deployment(up, "gpt-4o-mini")
    document = gateway_config_export()
    entries = {d["name"]: d for d in document["deployments"]}
    assert entries["up-text-embedding-3-small"]["endpoint"] == "embeddings"
    assert entries["up-gpt-4o-mini"]["endpoint"] == "chat"
    Deployment.objects.all().delete()
    gateway_config_import(document=document)
    assert Deployment.objects.get(name="up-text-embedding-3-small").endpoint == "embeddings"
    assert Deployment.objects.get(name="up-gpt-4o-mini").endpoint == "chat"


def test_bootstrap_adds_the_mock_embedding_model(db: None) -> None:
    from django.core.management import call_command

    call_command("bootstrap")
    call_command("bootstrap")  # idempotent
    (dep,) = Deployment.objects.filter(model_name="text-embedding-3-small")
    assert dep.endpoint == "embeddings" and dep.provider.kind == "mock"
