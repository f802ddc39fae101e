from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"

    def ready(self) -> None:
        # Models and what imports them load only once the app registry is ready: here.
        from gatewaysite.config import changes, choices
        from routing.config.cache import config_cache
        from routing.models import RoutingRule, RoutingSettings, RuleTarget
        from routing.strategies.registry import strategy_names

        changes.watch(RoutingSettings, RoutingRule, RuleTarget)
        choices.register(strategy_names=strategy_names, model_names=lambda: config_cache.current().models)
