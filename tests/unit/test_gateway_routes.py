"""The gateway's route table, built from the real foodmesh.v1 descriptors."""

from __future__ import annotations

import itertools

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory

from gateway._errors import GatewayError
from gateway._routes import (
    RouteTable,
    TemplateError,
    foodmesh_services,
    parse_template,
    routes_of,
)


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_services(foodmesh_services())


def test_every_annotated_rpc_of_every_service_is_routed(table: RouteTable) -> None:
    got = {(r.method, r.template.source): r.rpc.full_name for r in table.routes}
    golden = {
        ("POST", "/api/v1/orders"): "foodmesh.v1.OrderService.PlaceOrder",
        ("GET", "/api/v1/orders"): "foodmesh.v1.OrderService.ListOrders",
        ("GET", "/api/v1/orders/{order_id}"): "foodmesh.v1.OrderService.GetOrder",
        ("POST", "/api/v1/orders/{order_id}:cancel"): "foodmesh.v1.OrderService.CancelOrder",
        ("GET", "/api/v1/orders/{order_id}/watch"): "foodmesh.v1.OrderService.WatchOrder",
        ("GET", "/api/v1/orders/{order_id}/track"): "foodmesh.v1.LocationService.TrackOrder",
        ("POST", "/api/v1/drivers/location"): "foodmesh.v1.LocationService.UpdateLocation",
        ("GET", "/api/v1/restaurants/search"): "foodmesh.v1.CatalogService.SearchRestaurants",
        ("GET", "/api/v1/restaurants/{restaurant_id}"): "foodmesh.v1.CatalogService.GetRestaurant",
        ("PUT", "/api/v1/restaurants/{restaurant.restaurant_id}"):
            "foodmesh.v1.CatalogService.UpsertRestaurant",
        ("PUT", "/api/v1/drivers/{driver.driver_id}"): "foodmesh.v1.DispatchService.UpsertDriver",
        ("POST", "/api/v1/quotes"): "foodmesh.v1.PricingService.QuoteOrder",
    }  # fmt: skip
    for key, rpc in golden.items():
        assert got.get(key) == rpc, key
    # Methods without an annotation and client streams have no route.
    names = set(got.values())
    assert "foodmesh.v1.OrderService.AssignDriver" not in names
    assert "foodmesh.v1.LocationService.StreamLocations" not in names
    assert "foodmesh.v1.DispatchService.DriverSession" not in names


def test_routes_carry_success_codes_roles_and_bodies(table: RouteTable) -> None:
    by_rpc = {r.rpc.name: r for r in table.routes}
    assert by_rpc["PlaceOrder"].success_code == 201
    assert by_rpc["UpdateLocation"].success_code == 204
    assert by_rpc["GetOrder"].success_code == 200
    assert by_rpc["UpdateLocation"].roles == {"driver"}
    assert by_rpc["TrackOrder"].roles == {"customer", "ops"}
    assert by_rpc["TrackOrder"].server_streaming
    assert by_rpc["PlaceOrder"].body == "*"
    assert by_rpc["UpsertRestaurant"].body == "restaurant"
    assert by_rpc["GetOrder"].body == ""


def test_literal_segments_beat_variables(table: RouteTable) -> None:
    m = table.match("GET", "/api/v1/restaurants/search?lat=1&lon=2")
    assert m.route.rpc.name == "SearchRestaurants"
    assert m.path_values == {}
    m = table.match("GET", "/api/v1/restaurants/rest_9")
    assert (m.route.rpc.name, m.path_values) == ("GetRestaurant", {"restaurant_id": "rest_9"})
    m = table.match("GET", "/api/v1/restaurants/rest_9/menu")
    assert m.route.rpc.name == "GetMenu"


def test_variables_are_percent_decoded_and_nested(table: RouteTable) -> None:
    m = table.match("GET", "/api/v1/orders/ord%2F1%20x/track")
    assert (m.route.rpc.name, m.path_values) == ("TrackOrder", {"order_id": "ord/1 x"})
    m = table.match("PUT", "/api/v1/drivers/drv_7")
    assert (m.route.rpc.name, m.path_values) == ("UpsertDriver", {"driver.driver_id": "drv_7"})


def test_a_verb_suffix_selects_its_route(table: RouteTable) -> None:
    m = table.match("POST", "/api/v1/orders/ord_1:cancel")
    assert (m.route.rpc.name, m.path_values) == ("CancelOrder", {"order_id": "ord_1"})
    m = table.match("POST", "/api/v1/restaurants/rest_1:pause")
    assert m.route.rpc.name == "SetRestaurantPaused"


def test_unknown_path_is_404(table: RouteTable) -> None:
    for path in ("/api/v1/nothing", "/", "/api/v1/orders/a/b/c/d", "/api/v1/orders//track"):
        with pytest.raises(GatewayError) as err:
            table.match("GET", path)
        assert err.value.status == 404, path
        assert "no route" in err.value.message


def test_wrong_method_is_405_with_allow(table: RouteTable) -> None:
    with pytest.raises(GatewayError) as err:
        table.match("DELETE", "/api/v1/orders")
    assert err.value.status == 405
    assert err.value.headers == {"Allow": "GET, POST"}
    with pytest.raises(GatewayError) as err:
        table.match("GET", "/api/v1/orders/ord_1:cancel")
    assert (err.value.status, err.value.headers["Allow"]) == (405, "POST")
    with pytest.raises(GatewayError) as err:
        table.match("POST", "/api/v1/orders/ord_1/track")
    assert (err.value.status, err.value.headers["Allow"]) == (405, "GET")


def test_templates_parse_wildcards_and_reject_bad_syntax() -> None:
    t = parse_template("/v1/{name=shelves/*/books/**}:get")
    assert t.verb == "get"
    assert t.match(["v1", "shelves", "s1", "books", "a", "b"], "get") == {
        "name": "shelves/s1/books/a/b"
    }
    assert t.match(["v1", "shelves", "s1", "books", "a"], "") is None
    assert t.match(["v1", "racks", "s1", "books", "a"], "get") is None
    t = parse_template("/v1/*/x/{id}")
    assert t.match(["v1", "any", "x", "7"], "") == {"id": "7"}
    assert t.expand_openapi() == "/v1/*/x/{id}"
    for bad in ("v1/x", "/v1/{a", "/v1/{a={b}}", "/v1/**/x", "/v1/{9x}", "/v1/x}"):
        with pytest.raises(TemplateError):
            parse_template(bad)


_made = itertools.count()


def _service_with(rule: http_pb2.HttpRule) -> descriptor.ServiceDescriptor:
    """A new service whose one RPC carries ``rule``, added as a new proto file would be."""
    n = next(_made)
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"gateway_test/extra{n}.proto", package=f"gateway_test{n}", syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )  # fmt: skip
    fdp.message_type.add(name="Req").field.add(
        name="shelf_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )  # fmt: skip
    fdp.message_type.add(name="Resp")
    method = fdp.service.add(name="ShelfService").method.add(
        name="GetShelf", input_type=f".gateway_test{n}.Req", output_type=f".gateway_test{n}.Resp"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.Add(fdp)
    message_factory.GetMessageClassesForFiles([fdp.name], pool)
    return pool.FindServiceByName(f"gateway_test{n}.ShelfService")


def test_additional_bindings_and_custom_methods_become_routes() -> None:
    rule = http_pb2.HttpRule(get="/v1/shelves/{shelf_id}")
    rule.additional_bindings.add(get="/v1/libraries/main/shelves/{shelf_id}")
    rule.additional_bindings.add(custom=http_pb2.CustomHttpPattern(kind="SEARCH", path="/v1/s"))
    svc = _service_with(rule)
    routes = routes_of(svc)
    assert [(r.method, r.template.source) for r in routes] == [
        ("GET", "/v1/shelves/{shelf_id}"),
        ("GET", "/v1/libraries/main/shelves/{shelf_id}"),
        ("SEARCH", "/v1/s"),
    ]
    table = RouteTable(routes)
    m = table.match("GET", "/v1/libraries/main/shelves/s3")
    assert m.path_values == {"shelf_id": "s3"}
    # No (foodmesh.v1.access): nobody may call it.
    assert routes[0].roles == frozenset()


def test_two_rpcs_on_one_route_are_refused() -> None:
    routes = routes_of(_service_with(http_pb2.HttpRule(get="/v1/x")))
    with pytest.raises(TemplateError, match="bound by both"):
        RouteTable([*routes, *routes])
