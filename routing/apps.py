from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing and latency"

    def ready(self) -> None:
        from routing.config.invalidation import watch
        from routing.models import RoutingRule, RoutingSettings, RuleTarget

        watch(RoutingSettings, RoutingRule, RuleTarget)
