"""Authentication and authorization at the edge.

* ``authenticate(connection)``: the request's identity from ``Authorization: Bearer mc_...`` (an
  org's API key) or the session cookie (a signed-in user); ``None`` when anonymous.
* Guards: ``require(permission)`` for every route under ``/api/v1/orgs/{org}`` (404 for
  non-members, 403 for members lacking the permission), ``require_user``, ``require_operator``.
  Each guard carries its permission in ``guard.permission`` so tests can walk every route.
"""

from gateway.auth.cookies import clear_session_cookie, session_cookie_name, set_session_cookie
from gateway.auth.guards import (
    GuardFn,
    provide_identity,
    provide_scope,
    require,
    require_operator,
    require_user,
    resolve_scope,
)
from gateway.auth.identity import authenticate, client_ip

__all__ = [
    "GuardFn",
    "authenticate",
    "clear_session_cookie",
    "client_ip",
    "provide_identity",
    "provide_scope",
    "require",
    "require_operator",
    "require_user",
    "resolve_scope",
    "session_cookie_name",
    "set_session_cookie",
]
