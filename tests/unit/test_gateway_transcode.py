"""Query, path and body mapping into requests; replies to JSON; error mapping."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from foodmesh.v1 import catalog_pb2, common_pb2, location_pb2, options_pb2, order_pb2
from gateway._errors import GatewayError, bad_request, http_status, status_json
from gateway._openapi import openapi
from gateway._routes import RouteTable, foodmesh_services
from gateway._transcode import apply_body, apply_query, message_json, set_field


def violations(err: GatewayError) -> dict[str, str]:
    (br,) = [d for d in err.details if isinstance(d, error_details_pb2.BadRequest)]
    return {v.field: v.description for v in br.field_violations}


def test_query_maps_repeated_nested_and_enums_by_name() -> None:
    req = catalog_pb2.SearchRestaurantsRequest()
    apply_query(
        req,
        [("lat", "37.77"), ("lon", "-122.41"), ("cuisine", "italian"), ("cuisine", "thai"),
         ("price_level", "1"), ("priceLevel", "2"), ("open_now", "true"), ("sort", "rating"),
         ("page_size", "5")],
    )  # fmt: skip
    assert (req.lat, req.lon) == (37.77, -122.41)
    assert list(req.cuisine) == ["italian", "thai"]
    assert list(req.price_level) == [1, 2]
    assert req.open_now is True
    assert req.sort == catalog_pb2.SEARCH_SORT_RATING
    assert req.page_size == 5
    for given in ("SEARCH_SORT_DELIVERY_TIME", "delivery_time", "3"):
        r = catalog_pb2.SearchRestaurantsRequest()
        apply_query(r, [("sort", given)])
        assert r.sort == catalog_pb2.SEARCH_SORT_DELIVERY_TIME, given


def test_query_sets_nested_fields_and_well_known_types() -> None:
    req = location_pb2.FindNearbyDriversRequest()
    apply_query(
        req,
        [("center.lat", "1.5"), ("center.lon", "2.5"), ("statuses", "available"),
         ("statuses", "DRIVER_STATUS_ON_DELIVERY"), ("max_age", "12.5s")],
    )  # fmt: skip
    assert (req.center.lat, req.center.lon) == (1.5, 2.5)
    assert list(req.statuses) == [
        common_pb2.DRIVER_STATUS_AVAILABLE,
        common_pb2.DRIVER_STATUS_ON_DELIVERY,
    ]
    assert req.max_age.ToMilliseconds() == 12500
    hist = location_pb2.GetLocationHistoryRequest()
    apply_query(hist, [("start_time", "2026-01-02T03:04:05Z")])
    assert hist.start_time.seconds == 1767323045


def test_bad_query_values_are_400_naming_each_field() -> None:
    req = catalog_pb2.SearchRestaurantsRequest()
    with pytest.raises(GatewayError) as err:
        apply_query(
            req,
            [("lat", "north"), ("sort", "cheapest"), ("nope", "1"), ("open_now", "maybe"),
             ("page_size", "1.5")],
        )  # fmt: skip
    assert err.value.status == 400
    got = violations(err.value)
    assert set(got) == {"lat", "sort", "nope", "open_now", "page_size"}
    assert "rating" in got["sort"] and "distance" in got["sort"]
    with pytest.raises(GatewayError) as err:
        apply_query(location_pb2.FindNearbyDriversRequest(), [("center", "1,2")])
    assert "center" in violations(err.value)


def test_path_values_set_nested_fields() -> None:
    req = catalog_pb2.UpsertRestaurantRequest()
    set_field(req, "restaurant.restaurant_id", "rest_1")
    assert req.restaurant.restaurant_id == "rest_1"


def test_body_star_parses_the_whole_request_with_json_and_proto_names() -> None:
    req = order_pb2.PlaceOrderRequest()
    body = {
        "restaurant_id": "rest_1",
        "items": [{"item_id": "margherita", "quantity": 2, "customizations": ["large"]}],
        "deliveryAddress": {"street": "x", "lat": 1.0, "lon": 2.0},
        "delivery_option": "DELIVERY_OPTION_SCHEDULED",
        "scheduled_time": "2026-01-02T03:04:05Z",
    }
    apply_body(req, "*", json.dumps(body).encode())
    assert req.items[0].quantity == 2
    assert req.delivery_address.lat == 1.0
    assert req.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED
    assert req.scheduled_time.seconds == 1767323045


def test_body_field_parses_into_that_field() -> None:
    req = catalog_pb2.UpsertRestaurantRequest()
    apply_body(req, "restaurant", b'{"name": "Luigi", "cuisines": ["pizza"]}')
    assert (req.restaurant.name, list(req.restaurant.cuisines)) == ("Luigi", ["pizza"])
    with pytest.raises(GatewayError) as err:
        apply_body(req, "restaurant", b'{"name": "Luigi", "stars": 5}')
    assert violations(err.value) == {"restaurant.stars": "unknown field"}


def test_unknown_body_fields_are_400_naming_all_of_them() -> None:
    body = {"restaurant_id": "r", "colour": "red", "items": [{"item_id": "a", "qty": 1}],
            "delivery_address": {"street": "x", "postcode": "1"}}  # fmt: skip
    with pytest.raises(GatewayError) as err:
        apply_body(order_pb2.PlaceOrderRequest(), "*", json.dumps(body).encode())
    assert err.value.status == 400
    assert set(violations(err.value)) == {"colour", "items[0].qty", "delivery_address.postcode"}
    assert "colour" in err.value.message


def test_malformed_json_is_400_with_the_position() -> None:
    with pytest.raises(GatewayError) as err:
        apply_body(order_pb2.PlaceOrderRequest(), "*", b'{\n  "restaurant_id": "r",\n  oops}')
    assert err.value.status == 400
    assert "line 3 column 3" in err.value.message
    with pytest.raises(GatewayError) as err:
        apply_body(order_pb2.PlaceOrderRequest(), "*", b"[1, 2]")
    assert "JSON object" in err.value.message


def test_wrongly_typed_body_values_are_400_naming_the_field() -> None:
    with pytest.raises(GatewayError) as err:
        apply_body(order_pb2.PlaceOrderRequest(), "*", b'{"items": [{"quantity": "many"}]}')
    assert err.value.status == 400
    assert "items.quantity" in violations(err.value)


def test_replies_keep_proto_names_int64_as_strings_and_rfc3339_times() -> None:
    entry = order_pb2.TimelineEntry(seq=9007199254740993, status=common_pb2.ORDER_STATUS_PLACED)
    entry.timestamp.FromSeconds(1767323045)
    doc = json.loads(message_json(order_pb2.Order(order_id="o1", timeline=[entry])))
    assert doc["order_id"] == "o1"
    assert doc["timeline"][0] == {
        "seq": "9007199254740993",
        "status": "ORDER_STATUS_PLACED",
        "timestamp": "2026-01-02T03:04:05Z",
        "actor": "",
        "reason": "",
    }
    assert doc["items"] == [] and doc["eta_confidence"] == 0
    resp = catalog_pb2.UpsertRestaurantResponse()
    assert message_json(resp, response_body="restaurant") in (b"null", b"{}")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_grpc_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    assert http_status(code) == status


def test_a_declined_payment_is_402_by_the_contracts_rule_other_preconditions_400() -> None:
    def info(reason: str) -> list[error_details_pb2.ErrorInfo]:
        return [error_details_pb2.ErrorInfo(reason=reason, domain="order")]

    place = order_pb2.DESCRIPTOR.services_by_name["OrderService"].methods_by_name["PlaceOrder"]
    rules = tuple(place.GetOptions().Extensions[options_pb2.http_errors])
    fp = grpc.StatusCode.FAILED_PRECONDITION
    assert http_status(fp, info("PAYMENT_CARD_DECLINED"), rules) == 402
    assert http_status(fp, info("PAYMENT_INSUFFICIENT_FUNDS"), rules) == 402
    assert http_status(fp, info("PAYMENT_FAILED"), rules) == 400
    assert http_status(fp, info("RESTAURANT_CLOSED"), rules) == 400
    # The gateway itself knows no reason: without the RPC's rule a decline is a 400.
    assert http_status(fp, info("PAYMENT_CARD_DECLINED")) == 400


def test_error_bodies_are_google_rpc_status_json_with_typed_details() -> None:
    err = bad_request("bad", [("lat", "out of range")])
    unknown = any_pb2.Any(type_url="type.googleapis.com/acme.Secret", value=b"\x01")
    doc = json.loads(
        status_json(
            err.code,
            err.message,
            [*err.details, error_details_pb2.RequestInfo(request_id="req-1"), unknown],
        )
    )
    assert doc["code"] == 3 and doc["message"] == "bad"
    assert doc["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "field_violations": [{"field": "lat", "description": "out of range"}],
    }
    assert doc["details"][1] == {
        "@type": "type.googleapis.com/google.rpc.RequestInfo",
        "request_id": "req-1",
    }
    assert doc["details"][2] == {"@type": "type.googleapis.com/acme.Secret", "value": "AQ=="}


def test_openapi_document_describes_routes_schemas_and_auth() -> None:
    doc = openapi(RouteTable.from_services(foodmesh_services()))
    assert doc["openapi"] == "3.1.0"
    place = doc["paths"]["/api/v1/orders"]["post"]
    assert place["requestBody"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/foodmesh.v1.PlaceOrderRequest"
    )
    assert set(place["responses"]) == {
        "201", "400", "401", "403", "404", "409", "413", "429", "503", "504", "default"
    }  # fmt: skip
    assert place["security"] == [{"bearer": []}]
    assert "customer" in place["x-roles"] and "driver" not in place["x-roles"]
    limited = place["responses"]["429"]
    assert set(limited["headers"]) == {"Retry-After", "X-Request-Id"}
    assert limited["content"]["application/json"]["example"]["code"] == 8
    example = place["requestBody"]["content"]["application/json"]["example"]
    assert example["items"][0]["quantity"] == 1 and "restaurant_id" in example
    headers = {p["name"] for p in place["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Request-Timeout", "X-Request-Id"} <= headers
    assert "content" not in doc["paths"]["/api/v1/drivers/location"]["post"]["responses"]["204"]
    search = doc["paths"]["/api/v1/restaurants/search"]["get"]
    params = {p["name"]: p for p in search["parameters"]}
    assert params["cuisine"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["sort"]["schema"] == {"$ref": "#/components/schemas/foodmesh.v1.SearchSort"}
    watch = doc["paths"]["/api/v1/orders/{order_id}/watch"]["get"]
    assert "Last-Event-ID" in {p["name"] for p in watch["parameters"]}
    assert set(watch["responses"]["200"]["content"]) == {
        "application/json", "application/x-ndjson", "text/event-stream"
    }  # fmt: skip
    track = doc["paths"]["/api/v1/orders/{order_id}/track"]["get"]
    assert track["parameters"][0] == {
        "name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}
    }  # fmt: skip
    schemas = doc["components"]["schemas"]
    order = schemas["foodmesh.v1.Order"]["properties"]
    assert order["created_at"] == {"$ref": "#/components/schemas/google.protobuf.Timestamp"}
    assert schemas["google.protobuf.Timestamp"]["format"] == "date-time"
    assert schemas["foodmesh.v1.TimelineEntry"]["properties"]["seq"]["type"] == "string"
    assert "google.rpc.Status" in schemas
    # REQUIRED fields (google.api.field_behavior), less those a path or header carries.
    # (payment_method_id may be left out: the customer's default saved method pays.)
    assert place["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "restaurant_id"
    ]  # fmt: skip
    assert schemas["foodmesh.v1.OrderItemInput"]["required"] == ["item_id", "quantity"]
    cancel = doc["paths"]["/api/v1/orders/{order_id}:cancel"]["post"]
    assert cancel["requestBody"]["content"]["application/json"]["schema"]["required"] == ["reason"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Every $ref resolves.
    text = json.dumps(doc)
    for ref in {r.split('"')[0] for r in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref


def test_bodies_take_the_designs_enum_and_money_spellings() -> None:
    req = order_pb2.PlaceOrderRequest()
    body = {"delivery_option": "standard", "restaurant_id": "r",
            "items": [{"item_id": "a", "quantity": 1, "price": 14.99},
                      {"item_id": "b", "quantity": 2, "price": 8}],
            "tip": {"amount_minor": "100", "currency_code": "USD"},
            "scheduled_time": None}  # fmt: skip
    apply_body(req, "*", json.dumps(body).encode())
    assert req.delivery_option == order_pb2.DELIVERY_OPTION_STANDARD
    assert [i.price.amount_minor for i in req.items] == [1499, 800]
    assert req.items[0].price.currency_code == ""  # the service prices in its currency
    assert req.tip.amount_minor == 100 and not req.HasField("scheduled_time")
    full = order_pb2.PlaceOrderRequest()
    apply_body(full, "*", b'{"delivery_option": "DELIVERY_OPTION_SCHEDULED"}')
    assert full.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED
    for bad, field in (({"delivery_option": "soon"}, "delivery_option"),
                       ({"items": [{"price": 1.999}]}, "items[0].price")):  # fmt: skip
        with pytest.raises(GatewayError) as err:
            apply_body(order_pb2.PlaceOrderRequest(), "*", json.dumps(bad).encode())
        assert field in violations(err.value), violations(err.value)
