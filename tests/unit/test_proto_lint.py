"""Our buf-style lint rules, checked over the generated descriptors of every contract."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

import foodmesh.v1
from foodmesh.v1 import options_pb2

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_UPPER = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


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


def lint(files: list[descriptor.FileDescriptor]) -> list[str]:
    """Every rule broken, as ``file: what`` lines (empty when the contracts are clean)."""
    problems: list[str] = []
    inputs_seen: dict[str, str] = {}
    for f in files:
        where = f.name
        if f.package != "foodmesh.v1":
            problems.append(f"{where}: package is {f.package!r}, not 'foodmesh.v1'")
        for svc in f.services_by_name.values():
            if not svc.name.endswith("Service"):
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
                for msg in (m.input_type, m.output_type):
                    other = inputs_seen.setdefault(msg.full_name, rpc)
                    if other != rpc:
                        problems.append(f"{where}: {msg.name} is used by {other} and {rpc}")
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
    return problems


def _http(method: descriptor.MethodDescriptor) -> tuple[str, str] | None:
    opts = method.GetOptions()
    if not opts.HasExtension(annotations_pb2.http):
        return None
    rule = opts.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return (verb.upper(), getattr(rule, verb)) if verb else None


def _methods() -> dict[str, descriptor.MethodDescriptor]:
    return {
        f"{s.name}.{m.name}": m
        for f in _files()
        for s in f.services_by_name.values()
        for m in s.methods
    }


def test_the_contracts_follow_the_lint_rules() -> None:
    assert lint(_files()) == []


def test_all_six_services_exist_with_the_designs_rpcs() -> None:
    methods = _methods()
    for rpc in [
        "CatalogService.SearchRestaurants", "CatalogService.GetRestaurant",
        "CatalogService.GetMenu", "CatalogService.UpsertRestaurant",
        "OrderService.PlaceOrder", "OrderService.GetOrder", "OrderService.ListOrders",
        "OrderService.CancelOrder", "OrderService.UpdateOrderStatus", "OrderService.RateOrder",
        "OrderService.WatchOrder", "LocationService.StreamLocations",
        "LocationService.GetDriverLocation", "LocationService.FindNearbyDrivers",
        "LocationService.TrackOrder", "DispatchService.DriverSession",
        "DispatchService.MatchOrder", "DispatchService.GetAssignment",
        "EtaService.EstimateDelivery", "EtaService.Route",
        "PricingService.QuoteOrder", "PricingService.GetSurge",
    ]:  # fmt: skip
        assert rpc in methods, rpc


def test_streaming_shapes_match_the_design() -> None:
    m = _methods()
    bidi = ("LocationService.StreamLocations", "DispatchService.DriverSession")
    for rpc in bidi:
        assert m[rpc].client_streaming and m[rpc].server_streaming, rpc
    for rpc in ("OrderService.WatchOrder", "LocationService.TrackOrder"):
        assert m[rpc].server_streaming and not m[rpc].client_streaming, rpc


def test_the_seeds_rest_routes_and_status_codes_are_annotated() -> None:
    m = _methods()
    assert _http(m["CatalogService.SearchRestaurants"]) == ("GET", "/api/v1/restaurants/search")
    assert _http(m["OrderService.PlaceOrder"]) == ("POST", "/api/v1/orders")
    assert _http(m["LocationService.TrackOrder"]) == ("GET", "/api/v1/orders/{order_id}/track")
    assert _http(m["LocationService.UpdateLocation"]) == ("POST", "/api/v1/drivers/location")
    assert _http(m["DispatchService.MatchOrder"]) == ("POST", "/api/internal/v1/dispatch/match")
    code = options_pb2.http_success_code
    assert m["OrderService.PlaceOrder"].GetOptions().Extensions[code] == 201
    assert m["LocationService.UpdateLocation"].GetOptions().Extensions[code] == 204


def test_reads_are_marked_free_of_side_effects() -> None:
    for name, m in _methods().items():
        if name.split(".")[1].startswith(("Get", "List", "Search", "Find")):
            level = m.GetOptions().idempotency_level
            assert level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, name


def test_seed_field_names_are_kept() -> None:
    from foodmesh.v1 import catalog_pb2, order_pb2

    place = order_pb2.PlaceOrderRequest.DESCRIPTOR.fields_by_name
    for f in ("restaurant_id", "delivery_address", "payment_method_id", "promo_code",
              "scheduled_time", "delivery_option"):  # fmt: skip
        assert f in place, f
    summary = catalog_pb2.RestaurantSummary.DESCRIPTOR.fields_by_name
    for f in ("distance_miles", "delivery_time_min", "delivery_fee", "minimum_order"):
        assert f in summary, f


def _bad_file() -> descriptor.FileDescriptor:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bad/bad.proto", package="bad.v1", syntax="proto3"
    )
    fdp.message_type.add(name="thing_request").field.add(
        name="BadField", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    fdp.message_type.add(name="Reply")
    color = fdp.enum_type.add(name="Color")
    color.value.add(name="RED", number=0)
    svc = fdp.service.add(name="Things")
    svc.method.add(name="Get", input_type=".bad.v1.thing_request", output_type=".bad.v1.Reply")
    svc.method.add(name="Put", input_type=".bad.v1.thing_request", output_type=".bad.v1.Reply")
    pool = descriptor_pool.DescriptorPool()
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
        "field thing_request.BadField is not lower_snake_case",
        "message thing_request is not PascalCase",
    ],
)
def test_the_lint_catches_each_broken_rule(expected: str) -> None:
    problems = lint([_bad_file()])
    assert any(expected in p for p in problems), problems
