"""Errors of the gateway as ``google.rpc.Status``, gRPC codes mapped to HTTP statuses, and an
upstream's failed call as the gateway's error."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from foodmesh.v1 import options_pb2

__all__ = [
    "DOMAIN",
    "GatewayError",
    "bad_request",
    "error_info",
    "http_status",
    "status_from_proto",
    "status_json",
    "unpack_known",
    "upstream_error",
    "with_request_id",
]

#: The ErrorInfo domain of errors the gateway itself raises.
DOMAIN = "gateway.foodmesh.dev"

_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(
    code: grpc.StatusCode,
    details: Sequence[Message] = (),
    rules: Sequence[options_pb2.HttpErrorRule] = (),
) -> int:
    """The HTTP status of a gRPC code: the RPC's own ``(foodmesh.v1.http_errors)`` rule for
    the error's ErrorInfo reason when one matches, else the standard map (500 for the rest)."""
    if rules:
        for d in details:
            if not isinstance(d, error_details_pb2.ErrorInfo):
                continue
            for rule in rules:
                if d.reason.startswith(rule.reason_prefix) and d.reason not in rule.except_reasons:
                    return int(rule.http_status)
    return _HTTP.get(code, 500)


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    """An ErrorInfo of the gateway's own domain."""
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


@dataclass(slots=True)
class GatewayError(Exception):
    """A request the gateway answers with an error itself, before or instead of upstream."""

    code: grpc.StatusCode
    message: str
    details: list[Message] = field(default_factory=list)
    #: Overrides the mapped HTTP status (404/405/413 of the transport, not of a gRPC code).
    http: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @property
    def status(self) -> int:
        return self.http if self.http is not None else http_status(self.code, self.details)


def bad_request(message: str, violations: Iterable[tuple[str, str]]) -> GatewayError:
    """INVALID_ARGUMENT with BadRequest field violations ``(field, description)``."""
    br = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, [br])


def _detail_json(detail: any_pb2.Any) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(detail, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):
        # A detail type this process does not know: pass it on undecoded.
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def status_json(
    code: grpc.StatusCode, message: str, details: Iterable[Message | any_pb2.Any] = ()
) -> bytes:
    """The ``google.rpc.Status`` JSON body (proto field names, details with ``@type``)."""
    out: list[dict[str, Any]] = []
    for d in details:
        if isinstance(d, any_pb2.Any):
            packed = d
        else:
            packed = any_pb2.Any()
            packed.Pack(d)
        out.append(_detail_json(packed))
    body = {"code": code.value[0], "message": message, "details": out}
    return json.dumps(body, separators=(",", ":")).encode()


def status_from_proto(status: status_pb2.Status) -> tuple[grpc.StatusCode, list[any_pb2.Any]]:
    """The code and packed details of a ``google.rpc.Status``."""
    by_value = {c.value[0]: c for c in grpc.StatusCode}
    return by_value.get(status.code, grpc.StatusCode.UNKNOWN), list(status.details)


def unpack_known(details: Iterable[any_pb2.Any]) -> list[Message]:
    """The details of the standard types the gateway looks into (ErrorInfo, BadRequest)."""
    known: list[Message] = []
    for d in details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if d.Is(cls.DESCRIPTOR):
                m = cls()
                d.Unpack(m)
                known.append(m)
    return known


def with_request_id(details: list[Any], request_id: str) -> list[Any]:
    """The details with a RequestInfo naming the request (the service's own, if it sent one)."""
    for d in details:
        if isinstance(d, error_details_pb2.RequestInfo) or (
            isinstance(d, any_pb2.Any) and d.Is(error_details_pb2.RequestInfo.DESCRIPTOR)
        ):
            return details
    return [*details, error_details_pb2.RequestInfo(request_id=request_id)]


def upstream_error(
    err: grpc.aio.AioRpcError,
    path: str,
    rules: Sequence[options_pb2.HttpErrorRule] = (),
) -> GatewayError:
    """A failed upstream call as the error the client gets: the service's own status and
    details when they arrived whole (HTTP status by ``rules``), else one naming ``path``."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # details that disagree with the call's code (trailers cut short)
        status = None
    if status is not None:
        code, details = status_from_proto(status)
        return GatewayError(
            code,
            status.message,
            list(details),
            http=http_status(code, unpack_known(details), rules),
        )
    code = err.code()
    message = err.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        message = "the service behind this route is unavailable; retry shortly"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "the service behind this route did not answer in time"
    return GatewayError(code, message, [error_info(code.name, path=path)])
