from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers, deployments and pricing"

    def ready(self) -> None:
        from providers import checks  # noqa: F401 - registers the encryption key check
        from providers.models import Deployment, PricingRow, Provider
        from routing.config.invalidation import watch

        watch(Provider, Deployment, PricingRow)
