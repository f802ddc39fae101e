"""After a request that changed the configuration, wait until every process serves it.

Admin saves, deletes and actions, the admin's pricing import and the JWT admin API
(the strategy, and the key and team API under ``/v1/admin/``) all go through here: once
the view returned (its transaction committed), the response waits, at most
``GATEWAY_CONFIG_PROPAGATION_SECONDS``, until every live gateway process acknowledged
the new version (``routing/config/propagation.py``). The response then
carries ``x-gateway-config-propagation: complete`` or ``incomplete``; in the admin, an
incomplete one also shows a warning naming the processes that lag. Views that report it
themselves (the strategy API) have already waited, and nothing is left to do here.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse

from gatewaysite.middleware import API_PREFIX
from routing.config.propagation import take_pending, wait_for_propagation

HEADER = "x-gateway-config-propagation"
ADMIN_API_PREFIX = API_PREFIX + "admin/"  # the JWT key and team API: its writes are waited for


class ConfigPropagationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith(API_PREFIX) and not path.startswith(ADMIN_API_PREFIX):
            return self.get_response(request)  # the key-authenticated API changes no configuration
        take_pending()  # a thread reused from an earlier request starts clean
        response = self.get_response(request)
        result = wait_for_propagation()
        if result is not None:
            response[HEADER] = "complete" if result.complete else "incomplete"
            if not result.complete and hasattr(request, "_messages"):
                messages.warning(request, result.message())
        return response
