"""``POST /v1/routing/estimate-cost``: what a chat completion or embeddings request would cost on each candidate. Calls no provider."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse
from rest_framework.request import Request

from routing.services.estimate import routing_estimate
from routing.views.completions import ClientKeyView
from routing.views.embeddings import any_route


class EstimateCostView(ClientKeyView):
    parser_classes: list[Any] = []

    def post(self, request: Request) -> HttpResponse:
        result = routing_estimate(route=any_route(request))
        return HttpResponse(orjson.dumps(result), content_type="application/json")
