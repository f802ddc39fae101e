"""Django permissions on the staff API (JWT-authenticated views).

``is_staff`` alone grants nothing: each view names the model permissions each method
needs (``required_permissions``), the same ones the admin checks, so one set of
grants (the ``operators`` and ``finance`` groups, docs/configuration.md) rules both.
Superusers hold every permission.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission


class StaffPermission(BasePermission):
    message = "You do not have permission to perform this action."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if user is None or not (user.is_active and user.is_staff):
            return False
        method = "GET" if request.method == "HEAD" else request.method
        needed: tuple[str, ...] = view.required_permissions.get(method, ())
        if not needed:  # a method nobody listed is not allowed by accident
            return False
        if user.has_perms(needed):
            return True
        self.message = f"This needs the permission {' and '.join(needed)}."
        return False
