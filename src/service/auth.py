"""Authority: what writes the truth (labels, the registry's actions) needs the service's token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="The token set in SERVICE_TOKEN")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without a token, 403 with a wrong one (compared in constant time); with no token
    configured, writing is off, and the answer says how to turn it on."""
    authorize(request, credentials)


def bearer(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's bearer credentials, for a route that needs them only sometimes."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())


def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    configured = request.app.state.settings.service_token
    if configured is None or not configured.get_secret_value():
        raise HTTPException(
            403,
            "writing is off: no SERVICE_TOKEN is configured. Set SERVICE_TOKEN in the service's "
            "environment and send it as 'Authorization: Bearer <token>'",
        )
    if credentials is None:
        raise HTTPException(
            401,
            "send the service token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = configured.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(403, "the bearer token is not the service token")
