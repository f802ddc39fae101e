from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.defaults import bad_request, page_not_found, permission_denied
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenRefreshView

from accounts.apis import KeyDetailView, KeyListView, KeyRevokeView, KeyRotateView, TeamDetailView, TeamListView
from accounts.views import ThrottledTokenObtainPairView, admin_login
from gatewaysite.middleware import api_bad_request, api_forbidden, api_not_found, api_server_error, is_api_path
from monitoring.admin_views import overview_view
from monitoring.views import healthz, metrics, readyz
from routing.views.completions import ChatCompletionsView, ModelDetailView, ModelsView
from routing.views.embeddings import EmbeddingsView
from routing.views.estimate import EstimateCostView
from routing.views.explain import ExplainView
from routing.views.latency import LatencyView
from routing.views.messages import CountTokensView, MessagesView
from routing.views.strategy_admin import StrategyAdminView
from usage.views import CostReportView

urlpatterns = [
    path("v1/chat/completions", ChatCompletionsView.as_view()),
    path("v1/embeddings", EmbeddingsView.as_view()),
    path("v1/messages", MessagesView.as_view()),
    path("v1/messages/count_tokens", CountTokensView.as_view()),
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
    path("api/token/", ThrottledTokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("admin/overview/", admin.site.admin_view(overview_view), name="operator-overview"),
    path("admin/login/", admin_login, name="admin_login_throttled"),  # before the admin's own login
    path("admin/", admin.site.urls),
]


# Errors that never reach a view: OpenAI-shaped JSON on the API's paths (``/V1/...`` too),
# Django's pages elsewhere (the admin).
def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return api_bad_request(request, exception)
    return bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return api_forbidden(request, exception)
    return permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return api_not_found(request, exception)
    return page_not_found(request, exception)


handler500 = api_server_error
