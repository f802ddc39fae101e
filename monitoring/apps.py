from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring import schema  # noqa: F401 - registers the OpenAPI extensions
        from monitoring.recording import process_metrics

        process_metrics.enabled = settings.GATEWAY["METRICS_ENABLED"]
