"""People's roles are Django groups; a small decorator checks them."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

LEAD, REVIEWER, MANAGER = "lead", "reviewer", "manager"
ROLES = (LEAD, REVIEWER, MANAGER)


def user_roles(user: Any) -> set[str]:
    """The roles a user holds; superusers hold all of them. Cached per request user."""
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(ROLES)
    cached = getattr(user, "_fleet_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        user._fleet_roles = cached
    return cached


def role_required(*roles: str) -> Callable:
    """Let a view through for users holding any of ``roles``; 403 for the rest."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not user_roles(request.user) & set(roles):
                raise PermissionDenied(f"This page needs one of the roles: {', '.join(roles)}.")
            return view(request, *args, **kwargs)

        signed_in = login_required(checked)

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            # An agent (a bearer token, no session) is refused outright, not sent to
            # the login page: people's routes (approve, merge, adjudicate) are not
            # for agents of any role.
            bearer = request.META.get("HTTP_AUTHORIZATION", "").startswith("Bearer ")
            if not request.user.is_authenticated and bearer:
                raise PermissionDenied("Agents cannot use people's routes.")
            return signed_in(request, *args, **kwargs)

        return wrapper

    return decorator
