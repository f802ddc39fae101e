"""First-run set-up for the embedded default: admin user, mock provider, demo key.

The mock provider serves two chat models (``mock-gpt``, ``gpt-4``) and one embedding
model (``text-embedding-3-small``), so the first request of either kind works offline.

Idempotent: it creates only what is missing, so `make run` can call it every time.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.models import ClientKey
from accounts.services import key_issue
from providers.models import Deployment, DeploymentEndpoint, Provider, ProviderKind

EMBEDDING_MODEL = "text-embedding-3-small"


class Command(BaseCommand):
    help = "Create the admin user, the built-in mock provider and a demo client key if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username = os.environ.get("GATEWAY_ADMIN_USER", "admin")
        if not user_model.objects.filter(username=username).exists():
            password = os.environ.get("GATEWAY_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user_model.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(f"Admin user: {username} / password: {password} (shown once; change it in /admin/)")
        if not Provider.objects.exists():
            mock = Provider.objects.create(
                name="mock", kind=ProviderKind.MOCK, vendor="mock", options={"latency_ms": 20}
            )
            for model in ("mock-gpt", "gpt-4"):
                Deployment.objects.create(
                    name=f"mock-{model}", model_name=model, provider=mock, provider_model=model, context_window=128000
                )
            self.stdout.write("Configured the built-in mock provider for models: mock-gpt, gpt-4")
        mock_provider = Provider.objects.filter(name="mock", kind=ProviderKind.MOCK).first()
        if mock_provider is not None and not Deployment.objects.filter(model_name=EMBEDDING_MODEL).exists():
            Deployment.objects.create(
                name=f"mock-{EMBEDDING_MODEL}",
                model_name=EMBEDDING_MODEL,
                provider=mock_provider,
                provider_model=EMBEDDING_MODEL,
                endpoint=DeploymentEndpoint.EMBEDDINGS,
                context_window=8191,
            )
            self.stdout.write(f"Configured the built-in mock provider for embeddings: {EMBEDDING_MODEL}")
        if not ClientKey.objects.exists():
            _, secret = key_issue(name="demo", owner="make run")
            self.stdout.write(f"Demo client key (shown once): {secret}")
