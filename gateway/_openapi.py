"""OpenAPI 3.1 of the gateway, generated from the route table and message descriptors."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor

from gateway._routes import Route, RouteTable

__all__ = ["openapi"]

FD = descriptor.FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # 64-bit integers travel as strings in protobuf's JSON.
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
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


class _Schemas:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {"google.rpc.Status": _STATUS}

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
        return {
            "type": "object",
            "properties": {f.name: self.field(f) for f in desc.fields},
            "additionalProperties": False,
        }


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


def _operation(schemas: _Schemas, route: Route) -> dict[str, Any]:
    rpc = route.rpc
    bound = {v.field_path for v in route.template.variables}
    params = [
        {"name": v.field_path, "in": "path", "required": True, "schema": {"type": "string"}}
        for v in route.template.variables
    ]
    if not route.body:
        params += _query_params(schemas, rpc.input_type, "", bound, 0)
    op: dict[str, Any] = {
        "operationId": f"{rpc.containing_service.name}_{rpc.name}"
        + ("" if route.method in ("GET", "POST", "PUT") else f"_{route.method.lower()}"),
        "tags": [rpc.containing_service.name],
        "summary": rpc.name,
        "parameters": params,
        "security": [{"bearer": []}],
        "x-roles": sorted(route.roles),
    }
    if route.body:
        if route.body == "*":
            body_schema = schemas.ref(rpc.input_type)
        else:
            body_schema = schemas.field(rpc.input_type.fields_by_name[route.body])
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    out = schemas.ref(rpc.output_type)
    if route.response_body:
        out = schemas.field(rpc.output_type.fields_by_name[route.response_body])
    code = str(route.success_code)
    if route.success_code == 204:
        ok: dict[str, Any] = {"description": "Done (no body)."}
    elif route.server_streaming:
        ok = {
            "description": "The stream: SSE with Accept: text/event-stream, NDJSON by default, "
            "the first message alone with Accept: application/json.",
            "content": {
                "application/json": {"schema": out},
                "application/x-ndjson": {"schema": out},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": out}}}
    status_ref = {"$ref": "#/components/schemas/google.rpc.Status"}
    error = {
        "description": "An error as google.rpc.Status",
        "content": {"application/json": {"schema": status_ref}},
    }
    op["responses"] = {code: ok, "default": error}
    return op


def openapi(
    table: RouteTable, *, title: str = "foodmesh API", version: str = "v1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table``."""
    schemas = _Schemas()
    schemas.ref(any_pb2.Any.DESCRIPTOR)
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(table.routes, key=lambda r: r.template.source):
        item = paths.setdefault(route.template.expand_openapi(), {})
        item[route.method.lower()] = _operation(schemas, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.defs.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
