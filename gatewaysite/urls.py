from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.defaults import page_not_found
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.views import (
    KeyDetailView,
    KeyListView,
    KeyRevokeView,
    KeyRotateView,
    TeamDetailView,
    TeamListView,
)
from gatewaysite.middleware import api_not_found, api_server_error
from routing.views.completions import ChatCompletionsView, ModelDetailView, ModelsView
from routing.views.estimate import EstimateCostView
from routing.views.explain import ExplainView
from routing.views.latency import LatencyView
from routing.views.strategy_admin import StrategyAdminView
from usage.views import CostReportView


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"status":"ok"}', content_type="application/json")


urlpatterns = [
    path("v1/chat/completions", ChatCompletionsView.as_view()),
    path("v1/models", ModelsView.as_view()),
    path("v1/models/<path:model>", ModelDetailView.as_view()),
    path("v1/routing/estimate-cost", EstimateCostView.as_view()),
    path("v1/routing/latency", LatencyView.as_view()),
    path("v1/routing/explain", ExplainView.as_view()),
    path("v1/reports/costs", CostReportView.as_view()),
    # Keys and teams (staff JWT): under /v1/ with the rest of the API, JSON errors in OpenAI's shape.
    path("v1/admin/keys", KeyListView.as_view()),
    path("v1/admin/keys/<str:prefix>", KeyDetailView.as_view()),
    path("v1/admin/keys/<str:prefix>/revoke", KeyRevokeView.as_view()),
    path("v1/admin/keys/<str:prefix>/rotate", KeyRotateView.as_view()),
    path("v1/admin/teams", TeamListView.as_view()),
    path("v1/admin/teams/<int:team_id>", TeamDetailView.as_view()),
    # Before admin.site.urls: the seed's JWT endpoint lives under /admin/.
    path("admin/routing/strategy", StrategyAdminView.as_view()),
    path("api/token/", TokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("healthz", healthz),
    path("admin/", admin.site.urls),
]


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(("/v1/", "/api/")):
        return api_not_found(request, exception)
    return page_not_found(request, exception)


handler500 = api_server_error
