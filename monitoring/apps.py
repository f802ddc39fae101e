from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What imports models loads only once the app registry is ready: here.
        from django.conf import settings
        from django.core.signals import request_finished

        from monitoring import schema  # noqa: F401 - registers the OpenAPI extensions
        from monitoring.middleware import clear_request_context
        from monitoring.recording import observe_usage, process_metrics
        from usage.observers import on_usage

        process_metrics.enabled = settings.GATEWAY["METRICS_ENABLED"]
        request_finished.connect(clear_request_context, dispatch_uid="monitoring.clear_request_context")
        on_usage(observe_usage)  # the request path's finished usage: metrics and the log line
