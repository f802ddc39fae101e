from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Client keys and teams"

    def ready(self) -> None:
        from accounts.models import ClientKey, Team
        from gatewaysite import checks  # noqa: F401 - registers the project's security checks
        from routing.config.invalidation import watch

        watch(ClientKey, Team)
