from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Client keys and teams"

    def ready(self) -> None:
        # Models load only once the app registry is ready: here.
        from accounts.models import ClientKey, Team
        from gatewaysite.config.changes import watch

        watch(ClientKey, Team)
