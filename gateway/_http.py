"""What every gateway response shares: the request id, the JSON response, the error response."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from gateway._errors import GatewayError, status_json, with_request_id

__all__ = ["error_response", "json_response", "request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: web.Request) -> str:
    """The client's ``X-Request-Id`` when it is a sane one, else a fresh id."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def json_response(status: int, body: bytes, request_id: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=None if status == 204 else body,
        content_type=None if status == 204 else "application/json",
        headers={"X-Request-Id": request_id, **headers},
    )


def error_response(err: GatewayError, request_id: str, *, retry_after_s: int) -> web.Response:
    """``err`` as its ``google.rpc.Status`` JSON; a 503 says when to retry, a 401 how to
    authenticate."""
    body = status_json(err.code, err.message, with_request_id(err.details, request_id))
    headers = dict(err.headers)
    if err.status == 503:
        headers.setdefault("Retry-After", str(retry_after_s))
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="foodmesh"')
    return json_response(err.status, body, request_id, **headers)
