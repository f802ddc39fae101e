"""``POST /v1/routing/explain``: where a chat completion or embeddings body would go, and why. Calls no provider."""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from rest_framework.request import Request

from routing.services.explain import routing_explain
from routing.views.completions import ClientKeyView
from routing.views.embeddings import any_route


class ExplainView(ClientKeyView):
    parser_classes: list = []

    def post(self, request: Request) -> HttpResponse:
        result = routing_explain(route=any_route(request))
        return HttpResponse(orjson.dumps(result, default=str), content_type="application/json")
