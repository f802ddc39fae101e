"""The operator overview in the admin (``/admin/overview/``, linked from the admin's front page)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from monitoring.overview import operator_overview


def overview_view(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:  # admin_view() already sent anonymous users to the login page
        raise PermissionDenied
    context = {**admin.site.each_context(request), "title": "Operator overview", **operator_overview()}
    return TemplateResponse(request, "monitoring/overview.html", context)
