from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers, deployments and pricing"

    def ready(self) -> None:
        # Models load only once the app registry is ready: here.
        from gatewaysite.config.changes import watch
        from providers import checks  # noqa: F401 - registers the encryption key check
        from providers.models import Deployment, PricingRow, Provider

        watch(Provider, Deployment, PricingRow)
