from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.core.signals import request_finished

        from monitoring import schema  # noqa: F401 - registers the OpenAPI extensions
        from monitoring.middleware import clear_request_context
        from monitoring.recording import process_metrics

        process_metrics.enabled = settings.GATEWAY["METRICS_ENABLED"]
        request_finished.connect(clear_request_context, dispatch_uid="monitoring.clear_request_context")
