"""Reading prices: what is exported, and which deployments have no price."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from gatewaysite.clock import now
from providers.models import Deployment, PricingRow


def pricing_rows() -> QuerySet:

    return PricingRow.objects.order_by("vendor", "model", "effective_from")


def deployments_unpriced(*, at: datetime | None = None, enabled_only: bool = True) -> list:
    """Deployments with no pricing row in effect at ``at`` (now): their cost is unknown.

    Matched like the request path prices them: (provider's pricing vendor, provider model).
    """

    moment = at or now()
    priced = set(PricingRow.objects.filter(effective_from__lte=moment).values_list("vendor", "model").distinct())
    deployments = Deployment.objects.select_related("provider").order_by("model_name", "name")
    if enabled_only:
        deployments = deployments.filter(enabled=True, provider__enabled=True)
    return [d for d in deployments if (d.provider.pricing_vendor, d.provider_model) not in priced]
