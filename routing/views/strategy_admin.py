"""``GET/POST /admin/routing/strategy``: read or switch the active strategy.

A staff JWT with the routing settings' view permission reads, with the change
permission switches (both in the ``operators`` group). A switch answers once every live
gateway process routes with the new strategy (bounded by
``GATEWAY_CONFIG_PROPAGATION_SECONDS``); ``propagation`` in the answer says whether they
all did (``gatewaysite/config/propagation.py``).
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.api.permissions import StaffPermission
from gatewaysite.config.middleware import HEADER
from gatewaysite.config.propagation import wait_for_propagation
from routing.selectors import routing_settings_read
from routing.serializers import StrategySwitchSerializer
from routing.services.settings import routing_strategy_set
from routing.strategies.registry import strategy_names


class StrategyAdminView(APIView):
    # authentication: JWT (settings.REST_FRAMEWORK)
    permission_classes = [StaffPermission]
    required_permissions = {
        "GET": ("routing.view_routingsettings",),
        "POST": ("routing.change_routingsettings",),
    }

    def get(self, request: Request) -> Response:
        current = routing_settings_read()
        return Response({"strategy": current.strategy, "strategies": strategy_names()})

    def post(self, request: Request) -> Response:
        switch = StrategySwitchSerializer(data=request.data)
        if not switch.is_valid():
            error = switch.errors.get("strategy", [None])[0]
            if error is not None and error.code == "invalid_strategy":
                raise InvalidRequest(str(error), code="invalid_strategy", param="strategy")
            raise InvalidRequest(
                f'Send {{"strategy": NAME}} with one of: {", ".join(strategy_names())}.', param="strategy"
            )
        updated = routing_strategy_set(strategy=switch.validated_data["strategy"])
        propagation = wait_for_propagation()
        body = {"strategy": updated.strategy, "strategies": strategy_names()}
        if propagation is None:  # unchanged: nothing was written
            return Response({**body, "propagation": {"complete": True, "changed": False}})
        response = Response({**body, "propagation": propagation.as_dict()})
        response[HEADER] = "complete" if propagation.complete else "incomplete"
        return response
