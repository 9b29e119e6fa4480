"""OpenAPI 3.1 of the gateway, generated from the route table and message descriptors."""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import any_pb2, descriptor

from gateway._routes import Route, RouteTable

__all__ = ["openapi"]

FD = descriptor.FieldDescriptor
_I32 = {"minimum": -(2**31), "maximum": 2**31 - 1}
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32", **_I32},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32", **_I32},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32", **_I32},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    # 64-bit integers travel as strings in protobuf's JSON.
    FD.TYPE_INT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}
_STATUS = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC code, a message and typed details "
    "(BadRequest field violations, ErrorInfo, RequestInfo with the request id).",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
    "required": ["code", "message"],
}
_EXAMPLE_TIME = "2026-01-01T12:00:00Z"
_RID = "4bf92f3577b34da6a3ce929d0e0e4736"
# One example body per error status; the gateway and the services answer in this shape.
_ERRORS: dict[str, tuple[str, int, str, list[dict[str, Any]]]] = {
    "400": ("Bad input: BadRequest names each field (or header) at fault.", 3,
            "bad query parameters: page_size: 'ten' is not an integer",
            [{"@type": "type.googleapis.com/google.rpc.BadRequest",
              "field_violations": [{"field": "page_size",
                                    "description": "'ten' is not an integer"}]}]),
    "401": ("No bearer token, or a bad or expired one.", 16,
            "invalid bearer token: token expired",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_TOKEN",
              "domain": "gateway.foodmesh.dev", "metadata": {}}]),
    "403": ("The token's role may not call this.", 7,
            "role 'driver' may not call PlaceOrder (allowed: customer)",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ROLE_NOT_ALLOWED",
              "domain": "gateway.foodmesh.dev", "metadata": {"role": "driver"}}]),
    "404": ("Not found, or not yours (someone else's order is not found for you).", 5,
            "order ord_123 not found", []),
    "409": ("Conflicts with the current state (ALREADY_EXISTS, ABORTED).", 10,
            "the order changed meanwhile; retry", []),
    "413": ("The request body is larger than the gateway takes.", 8,
            "the request body is larger than 1048576 bytes",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "BODY_TOO_LARGE",
              "domain": "gateway.foodmesh.dev", "metadata": {"limit": "1048576"}}]),
    "429": ("Rate limited (per client IP and per caller); retry after Retry-After seconds.", 8,
            "too many requests from this caller (limit 20/s); retry in 1 s",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMITED",
              "domain": "gateway.foodmesh.dev", "metadata": {"scope": "caller", "limit": "20"}},
             {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "0.050s"}]),
    "503": ("The service behind the route is down; retry after Retry-After seconds.", 14,
            "the service behind this route is unavailable; retry shortly",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "UNAVAILABLE",
              "domain": "gateway.foodmesh.dev", "metadata": {"path": "/api/v1/orders"}}]),
    "504": ("The service did not answer within the deadline.", 4,
            "the service behind this route did not answer in time", []),
}  # fmt: skip
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}
_REQUEST_ID_HEADER = {
    "description": "The request's id (the client's X-Request-Id, or a new one); also in "
    "every error body as RequestInfo.request_id and in the services' logs.",
    "schema": {"type": "string"},
}
_DESCRIPTION = """\
JSON over HTTP in front of foodmesh's gRPC services, transcoded from the contracts'
`google.api.http` annotations (as grpc-gateway and Envoy do).

* **JSON**: protobuf's JSON mapping with the proto field names (`order_id`); 64-bit
  integers are strings, times RFC 3339, enums by name. Unknown fields are refused (400).
* **Auth**: `Authorization: Bearer <JWT>` with a `role` claim (customer, restaurant,
  driver, ops, service). Dev: HS256 (`foodmesh token --role customer --sub c_1`);
  production: RS256/ES256 from the identity provider's JWKS. `x-roles` on each operation
  lists who may call it; the services check ownership (another's order is 404).
* **Errors**: `google.rpc.Status` JSON (`code`, `message`, `details` with
  BadRequest field violations, ErrorInfo, RetryInfo, RequestInfo).
* **Limits**: per client IP and per caller token buckets (429 + Retry-After), a body
  size cap (413), the upstream deadline from `X-Request-Timeout` (seconds, or gRPC's
  `grpc-timeout` form `500m`), capped.
* **Streams** (`/watch`, `/track`): server-sent events with `Accept: text/event-stream`
  (event ids; `Last-Event-ID` resumes), NDJSON by default, the current state alone with
  `Accept: application/json` (`/track`, as the design documents it: the current state by
  default, NDJSON with `Accept: application/x-ndjson`).
* **Retries**: writes take an `Idempotency-Key` header; a POST without one is a new request
  each time.
"""


class _Schemas:
    def __init__(self, inputs: frozenset[str] = frozenset()) -> None:
        self.defs: dict[str, Any] = {"google.rpc.Status": _STATUS}
        # Requests list their required fields per route (a path or header may carry one).
        self.inputs = inputs

    def ref(self, desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> dict[str, Any]:
        name = desc.full_name
        if name not in self.defs:
            self.defs[name] = {}  # placeholder first: recursive messages
            if isinstance(desc, descriptor.EnumDescriptor):
                self.defs[name] = {"type": "string", "enum": [v.name for v in desc.values]}
            elif name in _WKT:
                self.defs[name] = _WKT[name]
            else:
                self.defs[name] = self.message(desc)
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, f: descriptor.FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        one = self.single(f)
        return {"type": "array", "items": one} if f.is_repeated else one

    def single(self, f: descriptor.FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None:
            return self.ref(f.message_type)
        if f.enum_type is not None:
            return self.ref(f.enum_type)
        return dict(_SCALARS[f.type])

    def message(self, desc: descriptor.Descriptor) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: self.field(f) for f in desc.fields},
            "additionalProperties": False,
        }
        required = [f.name for f in desc.fields if _required(f)]
        if required and desc.full_name not in self.inputs:
            schema["required"] = required
        return schema


def _required(f: descriptor.FieldDescriptor) -> bool:
    # Only fields that always print (no presence) are listed, so a reply always conforms.
    behaviors = f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return (
        field_behavior_pb2.REQUIRED in behaviors
        and f.message_type is None
        and not f.has_presence
        and f.containing_oneof is None
    )


def _example_value(f: descriptor.FieldDescriptor, depth: int) -> Any:
    if f.message_type is not None:
        if f.message_type.GetOptions().map_entry:
            return {"key": _example_value(f.message_type.fields_by_name["value"], depth)}
        one: Any = _example_single(f, depth)
    else:
        one = _example_single(f, depth)
    return [one] if f.is_repeated else one


def _example_single(f: descriptor.FieldDescriptor, depth: int) -> Any:
    sub = f.message_type
    if sub is not None:
        if sub.full_name == "google.protobuf.Timestamp":
            return _EXAMPLE_TIME
        if sub.full_name == "google.protobuf.Duration":
            return "30s"
        if sub.full_name in _WKT:
            return {}
        return example(sub, depth + 1)
    if f.enum_type is not None:
        values = [v.name for v in f.enum_type.values if v.number]
        return values[0] if values else f.enum_type.values[0].name
    t = f.type
    if t == FD.TYPE_STRING:
        name = f.name
        if name.endswith("_id"):
            return name.removesuffix("_id")[:4] + "_123"
        return {"currency": "USD", "city": "San Francisco", "street": "456 Mission St"}.get(
            name, name.replace("_", " ")
        )
    if t == FD.TYPE_BOOL:
        return False
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return {"lat": 37.7749, "lon": -122.4194}.get(f.name, 1.5)
    if t == FD.TYPE_BYTES:
        return "AQID"
    schema = _SCALARS[t]
    return "1" if schema["type"] == "string" else 1


def example(desc: descriptor.Descriptor, depth: int = 0) -> dict[str, Any]:
    """A made-up instance of a message in its JSON form (for the docs' examples)."""
    if depth > 3:
        return {}
    return {
        f.name: _example_value(f, depth)
        for f in desc.fields
        if f.containing_oneof is None or f is f.containing_oneof.fields[0]
    }


def _path_schema(schemas: _Schemas, desc: descriptor.Descriptor, path: str) -> dict[str, Any]:
    f: descriptor.FieldDescriptor | None = None
    for name in path.split("."):
        f = desc.fields_by_name.get(name)
        if f is None:
            return {"type": "string"}
        if f.message_type is not None:
            desc = f.message_type
    if f is None or f.message_type is not None or f.is_repeated:
        return {"type": "string"}
    if f.type == FD.TYPE_STRING:
        return {"type": "string"}
    return schemas.single(f)


def _query_params(
    schemas: _Schemas, desc: descriptor.Descriptor, prefix: str, bound: set[str], depth: int
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for f in desc.fields:
        name = prefix + f.name
        if name in bound:
            continue
        sub = f.message_type
        if sub is not None and sub.full_name not in _WKT:
            if not f.is_repeated and depth < 3:
                params += _query_params(schemas, sub, name + ".", bound, depth + 1)
            continue
        schema = schemas.field(f)
        params.append({"name": name, "in": "query", "required": False, "schema": schema,
                       **({"explode": True} if f.is_repeated else {})})  # fmt: skip
    return params


def _param_name(field_path: str) -> str:
    # A dotted name ({restaurant.restaurant_id}) trips many OpenAPI tools; the gateway
    # matches path variables by position, so the document's name is free.
    return field_path.replace(".", "_")


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema}  # fmt: skip


def _errors(route: Route) -> dict[str, Any]:
    codes = ["400", "401", "403", "404", "429", "503", "504"]
    if route.body:
        codes.append("413")
    if route.method != "GET":
        codes.append("409")
    out: dict[str, Any] = {}
    for code in sorted(codes):
        text, grpc_code, message, details = _ERRORS[code]
        body = {"code": grpc_code, "message": message,
                "details": [*details, {"@type": "type.googleapis.com/google.rpc.RequestInfo",
                                       "request_id": _RID}]}  # fmt: skip
        headers: dict[str, Any] = {"X-Request-Id": _REQUEST_ID_HEADER}
        if code in ("429", "503"):
            headers["Retry-After"] = _RETRY_AFTER
        out[code] = {
            "description": text,
            "headers": headers,
            "content": {"application/json": {"schema": _STATUS_REF, "example": body}},
        }
    return out


_STATUS_REF = {"$ref": "#/components/schemas/google.rpc.Status"}


def _operation(schemas: _Schemas, route: Route) -> dict[str, Any]:
    rpc = route.rpc
    bound = {v.field_path for v in route.template.variables}
    params = [
        {"name": _param_name(v.field_path), "in": "path", "required": True,
         "schema": _path_schema(schemas, rpc.input_type, v.field_path)}
        for v in route.template.variables
    ]  # fmt: skip
    if not route.body:
        params += _query_params(schemas, rpc.input_type, "", bound, 0)
    params.append(
        _header(
            "X-Request-Id",
            "Names the request in logs and errors (made when absent).",
            {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
        )
    )
    params.append(
        _header(
            "X-Request-Timeout",
            "Deadline of the upstream call: seconds (2.5) "
            "or gRPC's form (500m); capped by the gateway.",
            {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,9})?[HMSmun]?$"},
        )
    )
    if "idempotency_key" in rpc.input_type.fields_by_name:
        params.append(
            _header(
                "Idempotency-Key",
                "Makes the call safe to retry: the same key returns the first answer.",
                {"type": "string", "minLength": 1},
            )
        )
    if route.server_streaming and "after_seq" in rpc.input_type.fields_by_name:
        params.append(_header("Last-Event-ID", "Resumes an event stream after this event id.",
                              {"type": "string", "pattern": "^[0-9]{1,18}$"}))  # fmt: skip
    roles = sorted(route.roles)
    description = f"`{route.grpc_path}` over HTTP. Roles: {', '.join(roles) or 'nobody'}."
    if route.server_streaming:
        description += (
            " A server stream: SSE with `Accept: text/event-stream` (ids resume with "
            "Last-Event-ID, `: keep-alive` comments when idle), NDJSON by default, the "
            "first message alone with `Accept: application/json`."
        )
    op: dict[str, Any] = {
        "operationId": f"{rpc.containing_service.name}_{rpc.name}"
        + ("" if route.method in ("GET", "POST", "PUT") else f"_{route.method.lower()}"),
        "tags": [rpc.containing_service.name],
        "summary": rpc.name,
        "description": description,
        "parameters": params,
        "security": [{"bearer": []}],
        "x-roles": roles,
    }
    if route.body:
        if route.body == "*":
            body_schema = schemas.ref(rpc.input_type)
            elsewhere = {v.field_path.split(".")[0] for v in route.template.variables}
            elsewhere.add("idempotency_key")  # the Idempotency-Key header may carry it
            required = [
                f.name for f in rpc.input_type.fields if _required(f) and f.name not in elsewhere
            ]
            if required:
                body_schema = {**body_schema, "required": required}
            body_example: Any = example(rpc.input_type)
            for v in route.template.variables:
                body_example.pop(v.field_path.split(".")[0], None)
        else:
            f = rpc.input_type.fields_by_name[route.body]
            body_schema = schemas.field(f)
            body_example = _example_value(f, 0)
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema, "example": body_example}},
        }
    out = schemas.ref(rpc.output_type)
    out_example: Any = example(rpc.output_type)
    if route.response_body:
        f = rpc.output_type.fields_by_name[route.response_body]
        out = schemas.field(f)
        out_example = _example_value(f, 0)
    code = str(route.success_code)
    ok_headers = {"X-Request-Id": _REQUEST_ID_HEADER}
    if route.success_code == 204:
        ok: dict[str, Any] = {"description": "Done (no body).", "headers": ok_headers}
    elif route.server_streaming:
        ok = {
            "description": "The stream (see above).",
            "headers": ok_headers,
            "content": {
                "application/json": {"schema": out, "example": out_example},
                "application/x-ndjson": {"schema": out},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {
            "description": "OK",
            "headers": ok_headers,
            "content": {"application/json": {"schema": out, "example": out_example}},
        }
    default = {
        "description": "Any other error, as google.rpc.Status.",
        "content": {"application/json": {"schema": _STATUS_REF}},
    }
    op["responses"] = {code: ok, **_errors(route), "default": default}
    return op


def openapi(
    table: RouteTable, *, title: str = "foodmesh API", version: str = "v1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table``."""
    schemas = _Schemas(frozenset(r.rpc.input_type.full_name for r in table.routes))
    schemas.ref(any_pb2.Any.DESCRIPTOR)
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(table.routes, key=lambda r: r.template.source):
        path = route.template.expand_openapi()
        for v in route.template.variables:
            path = path.replace("{" + v.field_path + "}", "{" + _param_name(v.field_path) + "}")
        item = paths.setdefault(path, {})
        item[route.method.lower()] = _operation(schemas, route)
    tags = sorted({t for item in paths.values() for op in item.values() for t in op["tags"]})
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": _DESCRIPTION},
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.defs.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT with `sub` and `role` claims: HS256 in dev "
                    "(`foodmesh token`), RS256/ES256 from the identity provider's JWKS "
                    "in production.",
                }
            },
        },
    }
