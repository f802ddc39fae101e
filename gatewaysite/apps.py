from django.apps import AppConfig


class GatewaysiteConfig(AppConfig):
    """The bottom layer as an app: it owns ``ConfigVersion`` and the project's security checks."""

    name = "gatewaysite"
    verbose_name = "Gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gatewaysite import checks  # noqa: F401 - registers the project's security checks
