"""Keys and teams over HTTP: ``/v1/admin/keys`` and ``/v1/admin/teams`` (docs/configuration.md).

Staff only, with a JWT from ``/api/token/`` (never a client key: these views know no other
authentication), and the Django model permission that matches the operation: ``view_*``
to read, ``add_*`` to create, ``change_*`` to update, revoke or rotate, ``delete_*`` to
delete a team. Every change is written to the admin's history (``LogEntry``) with the
staff user who made it, like a change made in the admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models import Count, Model, QuerySet
from django.http import HttpResponse
from rest_framework.permissions import DjangoModelPermissions, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_fields import (
    KEY_FIELDS,
    TEAM_FIELDS,
    as_request_errors,
    field_error,
    key_json,
    parse_fields,
    team_json,
)
from accounts.jwt import StaffJWTAuthentication
from accounts.keys import KEY_MARK
from accounts.models import ClientKey, Team
from accounts.services import key_issue, key_revoke, key_rotate, key_update, team_create, team_update
from gatewaysite.api.errors import GatewayError, InvalidRequest, NotFound
from gatewaysite.clock import now


class StaffModelPermissions(DjangoModelPermissions):
    """DRF's model permissions, with reads needing ``view_*`` too."""

    perms_map = {**DjangoModelPermissions.perms_map, "GET": ["%(app_label)s.view_%(model_name)s"]}
    perms_map["HEAD"] = perms_map["GET"]


class ChangeOnPost(StaffModelPermissions):
    """Actions (revoke, rotate) are POSTs that change an existing object."""

    perms_map = {**StaffModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}


class Conflict(GatewayError):
    status_code = 409
    default_code = "conflict"


class AdminAPIView(APIView):
    authentication_classes = [StaffJWTAuthentication]
    permission_classes = [IsAdminUser, StaffModelPermissions]


def _log(request: Request, obj: Model, flag: int, message: str) -> None:
    user_id = request.user.pk
    assert user_id is not None  # only authenticated staff reach these views (IsAdminUser)
    LogEntry.objects.log_actions(
        user_id=user_id, queryset=[obj], action_flag=flag, change_message=message, single_object=True
    )


MAX_ID = 2**63 - 1  # the largest primary key Postgres stores; larger ids name nothing


def _limit_offset(request: Request) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", 100))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise InvalidRequest("limit and offset must be integers.", param="limit") from None
    if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_ID:
        raise InvalidRequest("limit must be 1 to 1000 and offset at least 0.", param="limit")
    return limit, offset


def _page(items: list[dict[str, Any]], limit: int) -> Response:
    return Response({"object": "list", "data": items[:limit], "has_more": len(items) > limit})


def _key(prefix: str) -> ClientKey:
    prefix = prefix.removeprefix(KEY_MARK).rstrip(".")
    key = ClientKey.objects.select_related("team").filter(prefix=prefix).first()
    if key is None:
        raise NotFound(f"No client key with the prefix '{prefix}'.", code="key_not_found")
    return key


def _team(team_id: int) -> Team:
    team = Team.objects.filter(pk=team_id).first() if team_id <= MAX_ID else None
    if team is None:
        raise NotFound(f"No team with the id {team_id}.", code="team_not_found")
    return team


def _changed(fields: list[str]) -> str:
    return f"Changed {', '.join(fields)} (over the API)." if fields else "No change (over the API)."


class KeyListView(AdminAPIView):
    queryset = ClientKey.objects.none()

    def get(self, request: Request) -> Response:
        limit, offset = _limit_offset(request)
        keys: QuerySet[ClientKey] = ClientKey.objects.select_related("team").order_by("-created_at", "-id")
        team = request.query_params.get("team")
        if team:
            by_id = team.isascii() and team.isdigit() and int(team) <= MAX_ID
            keys = keys.filter(team_id=int(team)) if by_id else keys.filter(team__name=team)
        status = request.query_params.get("status")
        moment = now()
        if status == "active":
            keys = keys.filter(revoked=False).exclude(expires_at__lte=moment)
        elif status == "revoked":
            keys = keys.filter(revoked=True)
        elif status == "expired":
            keys = keys.filter(revoked=False, expires_at__lte=moment)
        elif status:
            raise InvalidRequest("status must be active, revoked or expired.", param="status")
        return _page([key_json(k) for k in keys[offset : offset + limit + 1]], limit)

    def post(self, request: Request) -> Response:
        values = parse_fields(request.data, KEY_FIELDS, required=("name",))
        with as_request_errors():
            key, secret = key_issue(**values)
        _log(request, key, ADDITION, "Created (over the API).")
        return Response(key_json(key, secret=secret), status=201)


class KeyDetailView(AdminAPIView):
    queryset = ClientKey.objects.none()

    def get(self, request: Request, prefix: str) -> Response:
        return Response(key_json(_key(prefix)))

    def patch(self, request: Request, prefix: str) -> Response:
        key = _key(prefix)
        values = parse_fields(request.data, KEY_FIELDS)
        with as_request_errors():
            changed = key_update(key=key, changes=values)
        _log(request, key, CHANGE, _changed(changed))
        return Response(key_json(key))


class KeyRevokeView(AdminAPIView):
    queryset = ClientKey.objects.none()
    permission_classes = [IsAdminUser, ChangeOnPost]

    def post(self, request: Request, prefix: str) -> Response:
        key = _key(prefix)
        if not key.revoked:
            key_revoke(key=key)
            _log(request, key, CHANGE, "Revoked (over the API).")
        return Response(key_json(key))


class KeyRotateView(AdminAPIView):
    queryset = ClientKey.objects.none()
    permission_classes = [IsAdminUser, ChangeOnPost]

    def post(self, request: Request, prefix: str) -> Response:
        from django.conf import settings

        key = _key(prefix)
        data = request.data if isinstance(request.data, dict) else {}
        grace = data.get("grace_seconds", settings.GATEWAY["KEY_ROTATION_GRACE_SECONDS"])
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 30 * 86_400:
            raise field_error("grace_seconds", "must be an integer from 0 to 2592000 (30 days)")
        if key.revoked:
            raise Conflict("A revoked key cannot be rotated; issue a new one.", code="key_revoked")
        key, secret = key_rotate(key=key, grace_seconds=grace)
        _log(request, key, CHANGE, f"Rotated; the previous secret works for {grace} s more (over the API).")
        return Response(key_json(key, secret=secret))


class TeamListView(AdminAPIView):
    queryset = Team.objects.none()

    def get(self, request: Request) -> Response:
        limit, offset = _limit_offset(request)
        teams = Team.objects.annotate(n=Count("keys")).order_by("name")
        return _page([team_json(t, key_count=t.n) for t in teams[offset : offset + limit + 1]], limit)

    def post(self, request: Request) -> Response:
        values = parse_fields(request.data, TEAM_FIELDS, required=("name",))
        if Team.objects.filter(name=values["name"]).exists():
            raise Conflict(f"A team named '{values['name']}' exists already.", code="team_exists", param="name")
        with as_request_errors():
            team = team_create(**values)
        _log(request, team, ADDITION, "Created (over the API).")
        return Response(team_json(team, key_count=0), status=201)


class TeamDetailView(AdminAPIView):
    queryset = Team.objects.none()

    def get(self, request: Request, team_id: int) -> Response:
        return Response(team_json(_team(team_id)))

    def patch(self, request: Request, team_id: int) -> Response:
        team = _team(team_id)
        values = parse_fields(request.data, TEAM_FIELDS)
        with as_request_errors():
            changed = team_update(team=team, changes=values)
        _log(request, team, CHANGE, _changed(changed))
        return Response(team_json(team))

    def delete(self, request: Request, team_id: int) -> HttpResponse:
        team = _team(team_id)
        if team.keys.exists():
            raise Conflict("The team still has keys; move or delete them first.", code="team_has_keys")
        _log(request, team, DELETION, "Deleted (over the API).")
        team.delete()
        return HttpResponse(status=204)
