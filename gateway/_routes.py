"""The route table: HTTP routes read from ``google.api.http`` annotations of the descriptors.

A path template follows ``google/api/http.proto``::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

When several templates match a path the most literal one wins, segment by segment from
the left (``/restaurants/search`` beats ``/restaurants/{restaurant_id}``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from urllib.parse import unquote

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor

from foodmesh.v1 import common_pb2, options_pb2
from gateway._errors import GatewayError, error_info

__all__ = [
    "Match",
    "Route",
    "RouteTable",
    "Template",
    "TemplateError",
    "foodmesh_services",
    "parse_template",
]

_LITERAL, _ONE, _MANY = 0, 1, 2  # also the precedence rank: lower is more specific


class TemplateError(ValueError):
    """A path template that does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A field bound to the path segments ``[start, end)``; ``end`` counts from the end for **."""

    field_path: str
    start: int
    end: int
    multi: bool


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed path template."""

    source: str
    segments: tuple[tuple[int, str], ...]
    variables: tuple[Variable, ...]
    verb: str

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(kind for kind, _ in self.segments)

    def match(self, parts: Sequence[str], verb: str) -> dict[str, str] | None:
        """The variables' values when the (decoded) path segments match, else None."""
        if verb != self.verb:
            return None
        n = len(self.segments)
        multi = n > 0 and self.segments[-1][0] == _MANY
        if (len(parts) < n - 1) if multi else (len(parts) != n):
            return None
        for i, (kind, text) in enumerate(self.segments):
            if kind == _MANY:
                break
            if kind == _LITERAL and parts[i] != text:
                return None
        values: dict[str, str] = {}
        for v in self.variables:
            end = len(parts) - (n - v.end) if v.multi else v.end
            chunk = parts[v.start : end]
            if not v.multi and any(p == "" for p in chunk):
                return None
            values[v.field_path] = "/".join(chunk)
        return values

    def expand_openapi(self) -> str:
        """The template as an OpenAPI path (``{field}`` for each variable)."""
        out: list[str] = []
        i = 0
        by_start = {v.start: v for v in self.variables}
        while i < len(self.segments):
            v = by_start.get(i)
            if v is not None:
                out.append("{" + v.field_path + "}")
                i = len(self.segments) if v.multi else v.end
                continue
            out.append(self.segments[i][1])
            i += 1
        return "/" + "/".join(out) + (":" + self.verb if self.verb else "")


class _Parser:
    def __init__(self, source: str) -> None:
        self.s = source
        self.i = 0
        self.segments: list[tuple[int, str]] = []
        self.variables: list[Variable] = []

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"path template {self.s!r}: {why} at position {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def literal(self) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in "/{}=:*":
            self.i += 1
        if self.i == start:
            raise self.fail("expected a literal")
        return self.s[start : self.i]

    def segments_(self, *, in_variable: bool) -> None:
        while True:
            c = self.peek()
            if c == "*":
                self.i += 1
                if self.peek() == "*":
                    self.i += 1
                    self.segments.append((_MANY, "**"))
                else:
                    self.segments.append((_ONE, "*"))
            elif c == "{":
                if in_variable:
                    raise self.fail("nested variable")
                self.variable()
            else:
                self.segments.append((_LITERAL, self.literal()))
            if self.peek() != "/":
                return
            self.i += 1

    def variable(self) -> None:
        self.i += 1  # {
        start_i = self.i
        while self.i < len(self.s) and self.s[self.i] not in "=}":
            self.i += 1
        field_path = self.s[start_i : self.i]
        if not field_path or not all(p.isidentifier() for p in field_path.split(".")):
            raise self.fail(f"bad field path {field_path!r}")
        first = len(self.segments)
        if self.peek() == "=":
            self.i += 1
            self.segments_(in_variable=True)
        else:
            self.segments.append((_ONE, "*"))
        if self.peek() != "}":
            raise self.fail("expected '}'")
        self.i += 1
        multi = any(kind == _MANY for kind, _ in self.segments[first:])
        self.variables.append(Variable(field_path, first, len(self.segments), multi))

    def parse(self) -> Template:
        if not self.s.startswith("/"):
            raise self.fail("must start with '/'")
        self.i = 1
        self.segments_(in_variable=False)
        verb = ""
        if self.peek() == ":":
            self.i += 1
            verb = self.literal()
        if self.i != len(self.s):
            raise self.fail("unexpected character")
        for k, (kind, _) in enumerate(self.segments):
            if kind == _MANY and k != len(self.segments) - 1:
                raise self.fail("'**' must be the last segment")
        return Template(self.s, tuple(self.segments), tuple(self.variables), verb)


def parse_template(source: str) -> Template:
    """Parses a ``google.api.http`` path template; raises :class:`TemplateError`."""
    return _Parser(source).parse()


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    method: str
    template: Template
    body: str
    response_body: str
    rpc: descriptor.MethodDescriptor
    success_code: int
    #: Roles allowed by ``(foodmesh.v1.access)``; empty: nobody may call.
    roles: frozenset[str]
    #: The RPC's ``(foodmesh.v1.max_request_bytes)`` (0: not declared).
    max_request_bytes: int = 0
    #: The RPC's ``(foodmesh.v1.http_errors)``: statuses of its errors by reason.
    http_errors: tuple[options_pb2.HttpErrorRule, ...] = ()

    @property
    def grpc_path(self) -> str:
        return f"/{self.rpc.containing_service.full_name}/{self.rpc.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.rpc.server_streaming)

    @property
    def service(self) -> descriptor.ServiceDescriptor:
        return self.rpc.containing_service


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path_values: dict[str, str] = field(default_factory=dict)


def _role_name(value: int) -> str:
    return common_pb2.Role.Name(value).removeprefix("ROLE_").lower()  # type: ignore[arg-type]


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str, str]]:
    kind = rule.WhichOneof("pattern")
    if kind is not None:
        if kind == "custom":
            method, path = rule.custom.kind.upper(), rule.custom.path
        else:
            method, path = kind.upper(), getattr(rule, kind)
        yield method, path, rule.body, rule.response_body
    for extra in rule.additional_bindings:
        yield from _bindings(extra)


def routes_of(service: descriptor.ServiceDescriptor) -> list[Route]:
    """The HTTP routes of one service's annotated RPCs."""
    found: list[Route] = []
    for rpc in service.methods:
        opts = rpc.GetOptions()
        if not opts.HasExtension(annotations_pb2.http) or rpc.client_streaming:
            continue  # client and bidi streams have no HTTP mapping
        rule = opts.Extensions[annotations_pb2.http]
        code = opts.Extensions[options_pb2.http_success_code] or 200
        roles = frozenset(_role_name(r) for r in opts.Extensions[options_pb2.access].roles)
        size = opts.Extensions[options_pb2.max_request_bytes]
        errors = tuple(opts.Extensions[options_pb2.http_errors])
        for method, path, body, response_body in _bindings(rule):
            found.append(Route(method, parse_template(path), body, response_body, rpc, code, roles,
                               size, errors))  # fmt: skip
    return found


def foodmesh_services(package: ModuleType | None = None) -> list[descriptor.ServiceDescriptor]:
    """Every service of every ``*_pb2`` module of ``foodmesh.v1``, discovered at run time."""
    if package is None:
        package = importlib.import_module("foodmesh.v1")
    services: list[descriptor.ServiceDescriptor] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.endswith("_pb2"):
            mod = importlib.import_module(f"{package.__name__}.{info.name}")
            services.extend(mod.DESCRIPTOR.services_by_name.values())
    return services


def _split(raw_path: str, verbs: frozenset[str]) -> tuple[list[str], str]:
    path = raw_path.split("?", 1)[0]
    parts = path.lstrip("/").split("/") if path not in ("", "/") else []
    verb = ""
    if parts and ":" in parts[-1]:
        head, _, tail = parts[-1].rpartition(":")
        if unquote(tail) in verbs:
            parts[-1], verb = head, unquote(tail)
    return [unquote(p) for p in parts], verb


class RouteTable:
    """All routes, matched by method and path with literal segments preferred."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: (r.template.rank, r.template.verb == ""))
        self.verbs = frozenset(r.template.verb for r in self.routes if r.template.verb)
        seen: dict[tuple[str, str], Route] = {}
        for r in self.routes:
            key = (r.method, r.template.source)
            if key in seen:
                raise TemplateError(
                    f"{r.method} {r.template.source} is bound by both "
                    f"{seen[key].rpc.full_name} and {r.rpc.full_name}"
                )
            seen[key] = r

    @classmethod
    def from_services(cls, services: Iterable[descriptor.ServiceDescriptor]) -> RouteTable:
        return cls(r for s in services for r in routes_of(s))

    def match(self, method: str, raw_path: str) -> Match:
        """The route for ``method`` and ``raw_path`` (percent-encoded); 404 or 405 otherwise."""
        parts, verb = _split(raw_path, self.verbs)
        allowed: list[str] = []
        for route in self.routes:  # most specific first
            values = route.template.match(parts, verb)
            if values is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return Match(route, values)
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            allow = ", ".join(sorted(allowed))
            raise GatewayError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {method} is not allowed on {raw_path.split('?', 1)[0]}; allowed: {allow}",
                [error_info("METHOD_NOT_ALLOWED", allow=allow)],
                http=405,
                headers={"Allow": allow},
            )
        raise GatewayError(
            grpc.StatusCode.NOT_FOUND,
            f"no route for {method} {raw_path.split('?', 1)[0]}",
            [error_info("ROUTE_NOT_FOUND")],
            http=404,
        )
