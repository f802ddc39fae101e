from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage, cost and latency records"

    def ready(self) -> None:
        # Models load only once the app registry is ready: here.
        from providers.pricing.services import on_billing_check
        from usage.models import UsageRecord

        on_billing_check(lambda: UsageRecord.objects.exists())
