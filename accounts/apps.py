from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Client keys and teams"

    def ready(self) -> None:
        from accounts.models import ClientKey, Team
        from routing.config.invalidation import watch

        watch(ClientKey, Team)
