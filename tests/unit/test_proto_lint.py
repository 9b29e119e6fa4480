"""Our buf-style lint rules, checked over the descriptors of every contract.

buf is not on PyPI, so the rules we rely on are written here: naming (package,
services, RPCs, messages, fields, enums), one request and one response message
per RPC and never ``google.protobuf.Empty``, HTTP annotations whose path variables
and bodies name real request fields, an access rule on every RPC, and a comment on
every service, RPC, message, field, enum and enum value.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

import foodmesh.v1
from foodmesh import gen
from foodmesh.v1 import common_pb2, options_pb2

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_UPPER = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
_PATH_VAR = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_FD = descriptor.FieldDescriptor
_PATH_SCALARS = {_FD.TYPE_STRING, _FD.TYPE_INT32, _FD.TYPE_INT64, _FD.TYPE_UINT32}

RouteKey = tuple[str, str]


def _files() -> list[descriptor.FileDescriptor]:
    out = []
    for mod in pkgutil.iter_modules(foodmesh.v1.__path__):
        if mod.name.endswith("_pb2"):
            out.append(importlib.import_module(f"foodmesh.v1.{mod.name}").DESCRIPTOR)
    return out


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _messages(msgs: list[descriptor.Descriptor]) -> list[descriptor.Descriptor]:
    out = []
    for m in msgs:
        out.append(m)
        out += _messages(list(m.nested_types))
    return out


def _http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    opts = method.GetOptions()
    if not opts.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = opts.Extensions[annotations_pb2.http]
    return rule


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    """(VERB, path, body) of a rule and its additional bindings."""
    for r in (rule, *rule.additional_bindings):
        verb = r.WhichOneof("pattern")
        if verb == "custom":
            yield r.custom.kind.upper(), r.custom.path, r.body
        elif verb:
            yield verb.upper(), getattr(r, verb), r.body


def _resolve(msg: descriptor.Descriptor | None, dotted: str) -> descriptor.FieldDescriptor | None:
    field = None
    for part in dotted.split("."):
        if msg is None or part not in msg.fields_by_name:
            return None
        field = msg.fields_by_name[part]
        msg = field.message_type
    return field


def _lint_http(rpc: str, m: descriptor.MethodDescriptor, routes: dict[RouteKey, str]) -> list[str]:
    rule = _http_rule(m)
    if rule is None:
        return []
    problems = []
    for verb, path, body in _bindings(rule):
        if not path.startswith("/api/"):
            problems.append(f"{rpc}: http path {path} must start with /api/")
        other = routes.setdefault((verb, path), rpc)
        if other != rpc:
            problems.append(f"{rpc}: {verb} {path} is also {other}")
        if m.client_streaming:
            problems.append(f"{rpc}: a client stream cannot have an http binding")
        if verb in ("GET", "DELETE") and body:
            problems.append(f"{rpc}: {verb} {path} must not have a body")
        for var in _PATH_VAR.findall(path):
            field = _resolve(m.input_type, var)
            if field is None:
                problems.append(f"{rpc}: path variable {{{var}}} is not a request field")
            elif field.type not in _PATH_SCALARS or field.is_repeated:
                problems.append(f"{rpc}: path variable {{{var}}} is not a scalar field")
        if body and body != "*" and _resolve(m.input_type, body) is None:
            problems.append(f"{rpc}: body {body!r} is not a request field")
    return problems


def _lint_access(rpc: str, m: descriptor.MethodDescriptor) -> list[str]:
    opts = m.GetOptions()
    if not opts.HasExtension(options_pb2.access):
        return [f"{rpc}: no (foodmesh.v1.access) rule"]
    roles = list(opts.Extensions[options_pb2.access].roles)
    if not roles or common_pb2.ROLE_UNSPECIFIED in roles:
        return [f"{rpc}: (foodmesh.v1.access) must list roles, none UNSPECIFIED"]
    return []


def lint(files: list[descriptor.FileDescriptor]) -> list[str]:
    """Every rule broken, as ``file: what`` lines (empty when the contracts are clean)."""
    problems: list[str] = []
    rpc_messages: dict[str, str] = {}
    routes: dict[RouteKey, str] = {}
    for f in files:
        where = f.name
        if f.package != "foodmesh.v1":
            problems.append(f"{where}: package is {f.package!r}, not 'foodmesh.v1'")
        for svc in f.services_by_name.values():
            if not svc.name.endswith("Service") or not _PASCAL.match(svc.name):
                problems.append(f"{where}: service {svc.name} must end in 'Service'")
            for m in svc.methods:
                rpc = f"{svc.name}.{m.name}"
                if not _PASCAL.match(m.name):
                    problems.append(f"{where}: rpc {rpc} is not PascalCase")
                for kind, msg, suffix in (
                    ("request", m.input_type, "Request"),
                    ("response", m.output_type, "Response"),
                ):
                    if msg.full_name.startswith("google.protobuf."):
                        problems.append(f"{where}: {rpc} {kind} is {msg.full_name}")
                    elif msg.name != f"{m.name}{suffix}":
                        problems.append(
                            f"{where}: {rpc} {kind} is {msg.name}, not {m.name}{suffix}"
                        )
                    other = rpc_messages.setdefault(msg.full_name, rpc)
                    if other != rpc:
                        problems.append(f"{where}: {msg.name} is used by {other} and {rpc}")
                problems += [f"{where}: {p}" for p in _lint_http(rpc, m, routes)]
                problems += [f"{where}: {p}" for p in _lint_access(rpc, m)]
        for enum in list(f.enum_types_by_name.values()) + [
            e for msg in _messages(list(f.message_types_by_name.values())) for e in msg.enum_types
        ]:
            prefix = _upper_snake(enum.name) + "_"
            if enum.values[0].number != 0 or enum.values[0].name != prefix + "UNSPECIFIED":
                problems.append(f"{where}: enum {enum.name} zero value must be {prefix}UNSPECIFIED")
            for v in enum.values:
                if not v.name.startswith(prefix) or not _UPPER.match(v.name):
                    problems.append(f"{where}: enum value {v.name} must be {prefix}UPPER_SNAKE")
        for msg in _messages(list(f.message_types_by_name.values())):
            if not _PASCAL.match(msg.name):
                problems.append(f"{where}: message {msg.name} is not PascalCase")
            for field in msg.fields:
                if not _SNAKE.match(field.name):
                    problems.append(
                        f"{where}: field {msg.name}.{field.name} is not lower_snake_case"
                    )
    for f in files:
        for msg in f.message_types_by_name.values():
            used = msg.full_name in rpc_messages
            if msg.name.endswith(("Request", "Response")) and not used:
                problems.append(f"{f.name}: {msg.name} is named like an RPC's but no RPC uses it")
    return problems


def _enum_elements(
    e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, f"enum {e.name}"
    for i, v in enumerate(e.value):
        yield (*path, 2, i), f"enum value {v.name}"


def _message_elements(
    m: descriptor_pb2.DescriptorProto, path: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, f"message {m.name}"
    for i, fld in enumerate(m.field):
        yield (*path, 2, i), f"field {m.name}.{fld.name}"
    for i, nested in enumerate(m.nested_type):
        yield from _message_elements(nested, (*path, 3, i))
    for i, e in enumerate(m.enum_type):
        yield from _enum_elements(e, (*path, 4, i))


def _elements(f: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """Every element that needs a comment, by its source-info path (descriptor.proto numbers)."""
    for i, m in enumerate(f.message_type):
        yield from _message_elements(m, (4, i))
    for i, e in enumerate(f.enum_type):
        yield from _enum_elements(e, (5, i))
    for i, s in enumerate(f.service):
        yield (6, i), f"service {s.name}"
        for j, rpc in enumerate(s.method):
            yield (6, i, 2, j), f"rpc {s.name}.{rpc.name}"
    for i, ext in enumerate(f.extension):
        yield (7, i), f"extension {ext.name}"


def lint_comments(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every service, RPC, message, field, enum and enum value without a leading comment."""
    problems: list[str] = []
    for f in fds.file:
        documented = {
            tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()
        }
        problems += [f"{f.name}: {what} has no comment" for path, what in _elements(f)
                     if path not in documented]  # fmt: skip
    return problems


def _methods() -> dict[str, descriptor.MethodDescriptor]:
    return {
        f"{s.name}.{m.name}": m
        for f in _files()
        for s in f.services_by_name.values()
        for m in s.methods
    }


def _http(method: descriptor.MethodDescriptor) -> tuple[str, str] | None:
    rule = _http_rule(method)
    return next(((v, p) for v, p, _ in _bindings(rule)), None) if rule else None


def test_the_contracts_follow_the_lint_rules() -> None:
    assert lint(_files()) == []


def test_every_contract_element_is_documented() -> None:
    fds = gen.descriptor_set()
    assert {f.name for f in fds.file} == {f.name for f in _files()}
    assert lint_comments(fds) == []


def test_all_six_services_exist_with_the_designs_rpcs() -> None:
    methods = _methods()
    for rpc in [
        "CatalogService.SearchRestaurants", "CatalogService.GetRestaurant",
        "CatalogService.GetMenu", "CatalogService.UpsertRestaurant", "CatalogService.UpsertMenu",
        "CatalogService.ListReviews",
        "OrderService.PlaceOrder", "OrderService.GetOrder", "OrderService.ListOrders",
        "OrderService.CancelOrder", "OrderService.UpdateOrderStatus", "OrderService.RateOrder",
        "OrderService.WatchOrder", "LocationService.StreamLocations",
        "LocationService.UpdateLocation", "LocationService.GetDriverLocation",
        "LocationService.FindNearbyDrivers", "LocationService.GetLocationHistory",
        "LocationService.TrackOrder", "DispatchService.DriverSession",
        "DispatchService.MatchOrder", "DispatchService.GetAssignment",
        "EtaService.EstimateDelivery", "EtaService.EstimateTravelTimes", "EtaService.Route",
        "EtaService.CheckReroute", "EtaService.SetRoadOverrides",
        "PricingService.QuoteOrder", "PricingService.GetSurge", "PricingService.SetConditions",
        "PricingService.UpsertPromoCode",
    ]:  # fmt: skip
        assert rpc in methods, rpc
    services = {s.name for f in _files() for s in f.services_by_name.values()}
    assert services == {
        "CatalogService", "OrderService", "LocationService",
        "DispatchService", "EtaService", "PricingService",
    }  # fmt: skip


def test_streaming_shapes_match_the_design() -> None:
    m = _methods()
    streams = set()
    for rpc in ("LocationService.StreamLocations", "DispatchService.DriverSession"):
        assert m[rpc].client_streaming and m[rpc].server_streaming, rpc
        streams.add(rpc)
    for rpc in ("OrderService.WatchOrder", "LocationService.TrackOrder"):
        assert m[rpc].server_streaming and not m[rpc].client_streaming, rpc
        streams.add(rpc)
    others = {n for n, d in m.items() if d.client_streaming or d.server_streaming}
    assert others == streams


@pytest.mark.parametrize(
    ("rpc", "route"),
    [
        ("CatalogService.SearchRestaurants", ("GET", "/api/v1/restaurants/search")),
        ("CatalogService.GetRestaurant", ("GET", "/api/v1/restaurants/{restaurant_id}")),
        ("CatalogService.GetMenu", ("GET", "/api/v1/restaurants/{restaurant_id}/menu")),
        ("OrderService.PlaceOrder", ("POST", "/api/v1/orders")),
        ("OrderService.GetOrder", ("GET", "/api/v1/orders/{order_id}")),
        ("OrderService.CancelOrder", ("POST", "/api/v1/orders/{order_id}:cancel")),
        ("LocationService.TrackOrder", ("GET", "/api/v1/orders/{order_id}/track")),
        ("LocationService.UpdateLocation", ("POST", "/api/v1/drivers/location")),
        ("DispatchService.MatchOrder", ("POST", "/api/internal/v1/dispatch/match")),
    ],
)
def test_the_seeds_rest_routes_are_annotated(rpc: str, route: tuple[str, str]) -> None:
    assert _http(_methods()[rpc]) == route


def test_status_codes_other_than_200_are_declared_by_option() -> None:
    code = options_pb2.http_success_code
    declared = {
        name: m.GetOptions().Extensions[code]
        for name, m in _methods().items()
        if m.GetOptions().HasExtension(code)
    }
    assert declared["OrderService.PlaceOrder"] == 201
    assert declared["LocationService.UpdateLocation"] == 204
    assert set(declared.values()) <= {201, 202, 204}
    for name in declared:
        assert _http(_methods()[name]) is not None, name


def test_a_204_response_has_no_fields() -> None:
    for name, m in _methods().items():
        if m.GetOptions().Extensions[options_pb2.http_success_code] == 204:
            assert not m.output_type.fields, name


def test_reads_are_marked_free_of_side_effects_and_gets_are_reads() -> None:
    for name, m in _methods().items():
        level = m.GetOptions().idempotency_level
        is_get = (_http(m) or ("",))[0] == "GET" and not m.server_streaming
        if name.split(".")[1].startswith(("Get", "List", "Search", "Find")) or is_get:
            assert level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, name


def test_the_design_keeps_retry_safety_on_writes() -> None:
    m = _methods()
    idempotent = descriptor_pb2.MethodOptions.IDEMPOTENT
    for rpc in ("OrderService.PlaceOrder", "OrderService.CancelOrder",
                "LocationService.UpdateLocation", "PricingService.RedeemPromoCode"):  # fmt: skip
        assert m[rpc].GetOptions().idempotency_level == idempotent, rpc


def test_access_rules_follow_the_design() -> None:
    def roles(rpc: str) -> set[int]:
        return set(_methods()[rpc].GetOptions().Extensions[options_pb2.access].roles)

    assert roles("LocationService.StreamLocations") == {common_pb2.ROLE_DRIVER}
    assert roles("DispatchService.DriverSession") == {common_pb2.ROLE_DRIVER}
    assert roles("LocationService.TrackOrder") == {common_pb2.ROLE_CUSTOMER, common_pb2.ROLE_OPS}
    assert common_pb2.ROLE_CUSTOMER not in roles("DispatchService.MatchOrder")
    assert common_pb2.ROLE_CUSTOMER in roles("OrderService.PlaceOrder")


def test_seed_field_names_are_kept() -> None:
    from foodmesh.v1 import catalog_pb2, dispatch_pb2, location_pb2, order_pb2

    def has(msg: type, *names: str) -> None:
        fields = msg.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
        for n in names:
            assert n in fields, f"{msg.__name__}.{n}"

    has(order_pb2.PlaceOrderRequest, "restaurant_id", "items", "delivery_address",
        "payment_method_id", "promo_code", "scheduled_time", "delivery_option")  # fmt: skip
    has(order_pb2.OrderItemInput, "item_id", "name", "quantity", "price", "customizations")
    has(order_pb2.Order, "order_id", "status", "items", "pricing", "estimated_delivery_time",
        "created_at")  # fmt: skip
    has(order_pb2.Pricing, "subtotal", "delivery_fee", "service_fee", "tax", "discount", "total")
    has(catalog_pb2.SearchRestaurantsRequest, "lat", "lon", "radius", "cuisine", "sort")
    has(catalog_pb2.SearchRestaurantsResponse, "restaurants")
    has(catalog_pb2.RestaurantSummary, "restaurant_id", "name", "rating", "review_count",
        "distance_miles", "delivery_time_min", "delivery_fee", "minimum_order", "is_open",
        "image_url", "location")  # fmt: skip
    has(dispatch_pb2.MatchOrderRequest, "order_id", "restaurant_location", "delivery_location",
        "ready_time")  # fmt: skip
    has(dispatch_pb2.MatchOrderResponse, "driver_id", "driver_name", "driver_location", "rating",
        "vehicle", "eta_to_restaurant", "estimated_pickup_time", "estimated_delivery_time",
        "match_score")  # fmt: skip
    has(location_pb2.UpdateLocationRequest, "driver_id", "lat", "lon", "accuracy", "heading",
        "speed", "timestamp")  # fmt: skip
    has(location_pb2.TrackOrderResponse, "order_id", "status", "driver", "timeline", "eta",
        "eta_confidence")  # fmt: skip
    has(location_pb2.TrackedDriver, "driver_id", "name", "rating", "vehicle", "photo_url",
        "location")  # fmt: skip
    has(location_pb2.TrackedLocation, "lat", "lon", "heading", "last_updated")


def test_order_statuses_are_the_designs() -> None:
    names = [v.name for v in common_pb2.OrderStatus.DESCRIPTOR.values]
    assert names == [
        "ORDER_STATUS_UNSPECIFIED", "ORDER_STATUS_PLACED", "ORDER_STATUS_CONFIRMED",
        "ORDER_STATUS_PREPARING", "ORDER_STATUS_READY_FOR_PICKUP", "ORDER_STATUS_PICKED_UP",
        "ORDER_STATUS_IN_TRANSIT", "ORDER_STATUS_DELIVERED", "ORDER_STATUS_CANCELLED",
    ]  # fmt: skip


def test_money_is_integer_minor_units_everywhere() -> None:
    money = common_pb2.Money.DESCRIPTOR
    assert money.fields_by_name["amount_minor"].type == _FD.TYPE_INT64
    for f in _files():
        for msg in _messages(list(f.message_types_by_name.values())):
            for field in msg.fields:
                if field.message_type is None and re.search(
                    r"(fee|price|total|subtotal|amount|tax|discount|tip)$", field.name
                ):
                    pytest.fail(f"{msg.name}.{field.name} is money but not Money")


# A contract that breaks every rule, to prove the lint reports each one.


def _bad_file() -> descriptor.FileDescriptor:
    pool = descriptor_pool.DescriptorPool()
    for dep in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        pool.AddSerializedFile(dep.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bad/bad.proto",
        package="bad.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    fdp.message_type.add(name="thing_request").field.add(
        name="BadField", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    fdp.message_type.add(name="Reply")
    fdp.message_type.add(name="LonelyRequest")
    color = fdp.enum_type.add(name="Color")
    color.value.add(name="RED", number=0)
    color.value.add(name="COLOR_Blue", number=1)
    svc = fdp.service.add(name="Things")
    get = svc.method.add(
        name="Get", input_type=".bad.v1.thing_request", output_type=".bad.v1.Reply"
    )
    rule = get.options.Extensions[annotations_pb2.http]
    rule.get = "/api/v1/things/{thing_id}"
    rule.body = "*"
    svc.method.add(name="Put", input_type=".bad.v1.thing_request", output_type=".bad.v1.Reply")
    pool.Add(fdp)
    return pool.FindFileByName("bad/bad.proto")


@pytest.mark.parametrize(
    "expected",
    [
        "package is 'bad.v1'",
        "service Things must end in 'Service'",
        "Things.Get request is thing_request, not GetRequest",
        "Things.Get response is Reply, not GetResponse",
        "is used by Things.Get and Things.Put",
        "enum Color zero value must be COLOR_UNSPECIFIED",
        "enum value RED must be COLOR_UPPER_SNAKE",
        "enum value COLOR_Blue must be COLOR_UPPER_SNAKE",
        "field thing_request.BadField is not lower_snake_case",
        "message thing_request is not PascalCase",
        "Things.Get: path variable {thing_id} is not a request field",
        "Things.Get: GET /api/v1/things/{thing_id} must not have a body",
        "Things.Put: no (foodmesh.v1.access) rule",
        "LonelyRequest is named like an RPC's but no RPC uses it",
    ],
)
def test_the_lint_catches_each_broken_rule(expected: str) -> None:
    problems = lint([_bad_file()])
    assert any(expected in p for p in problems), problems


def test_the_comment_lint_catches_undocumented_elements() -> None:
    fds = gen.descriptor_set()
    order = next(f for f in fds.file if f.name == "foodmesh/v1/order.proto")
    assert lint_comments(fds) == []
    # Drop the comments of the first service, its first RPC and PlaceOrderRequest's first field.
    place = [i for i, m in enumerate(order.message_type) if m.name == "PlaceOrderRequest"][0]
    stripped = {(6, 0), (6, 0, 2, 0), (4, place, 2, 0)}
    for loc in order.source_code_info.location:
        if tuple(loc.path) in stripped:
            loc.leading_comments = ""
    problems = lint_comments(fds)
    assert sorted(problems) == sorted(
        [
            "foodmesh/v1/order.proto: service OrderService has no comment",
            "foodmesh/v1/order.proto: rpc OrderService.PlaceOrder has no comment",
            "foodmesh/v1/order.proto: field PlaceOrderRequest.idempotency_key has no comment",
        ]
    )
