"""``GET/POST /admin/routing/strategy``: read or switch the active strategy.

A staff JWT with the routing settings' view permission reads, with the change
permission switches (both in the ``operators`` group).
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.api.permissions import StaffPermission
from routing.services.settings import routing_settings_get, routing_strategy_set
from routing.strategies.registry import strategy_names


class StrategyAdminView(APIView):
    # authentication: JWT (settings.REST_FRAMEWORK)
    permission_classes = [StaffPermission]
    required_permissions = {
        "GET": ("routing.view_routingsettings",),
        "POST": ("routing.change_routingsettings",),
    }

    def get(self, request: Request) -> Response:
        current = routing_settings_get()
        return Response({"strategy": current.strategy, "strategies": strategy_names()})

    def post(self, request: Request) -> Response:
        data = request.data
        name = data.get("strategy") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f'Send {{"strategy": NAME}} with one of: {", ".join(strategy_names())}.', param="strategy"
            )
        if name not in strategy_names():
            raise InvalidRequest(
                f"Unknown strategy '{name}'. Valid strategies: {', '.join(strategy_names())}.",
                code="invalid_strategy",
                param="strategy",
            )
        updated = routing_strategy_set(strategy=name)
        return Response({"strategy": updated.strategy, "strategies": strategy_names()})
