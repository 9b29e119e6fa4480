"""The contracts' own rules, which buf does not know, and a check that buf runs.

buf (``foodmesh lint-proto``, part of ``./dev lint``, rules in ``proto/buf.yaml``)
checks naming, one request and one response message per RPC and never
``google.protobuf.Empty``, and a comment on every service, RPC, message, field, oneof,
enum and enum value; and that no change breaks the contracts of the baseline commit.
Here: HTTP annotations the gateway can serve (path variables and bodies naming real
request fields), an access rule on every RPC, integer money, a comment on every
extension (buf has no rule for those), and the design's services, routes and fields.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

import foodmesh.v1
from foodmesh import gen, protolint
from foodmesh.v1 import common_pb2, options_pb2

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
    """Every project rule broken, as ``file: what`` lines (empty when the contracts are clean)."""
    problems: list[str] = []
    routes: dict[RouteKey, str] = {}
    used: set[str] = set()
    for f in files:
        for svc in f.services_by_name.values():
            for m in svc.methods:
                rpc = f"{svc.name}.{m.name}"
                used |= {m.input_type.full_name, m.output_type.full_name}
                problems += [f"{f.name}: {p}" for p in _lint_http(rpc, m, routes)]
                problems += [f"{f.name}: {p}" for p in _lint_access(rpc, m)]
    for f in files:
        for msg in f.message_types_by_name.values():
            if msg.name.endswith(("Request", "Response")) and msg.full_name not in used:
                problems.append(f"{f.name}: {msg.name} is named like an RPC's but no RPC uses it")
    return problems


def lint_extension_comments(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every extension without a leading comment (buf's COMMENTS rules skip extensions)."""
    problems: list[str] = []
    for f in fds.file:
        documented = {
            tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()
        }
        problems += [f"{f.name}: extension {ext.name} has no comment"
                     for i, ext in enumerate(f.extension) if (7, i) not in documented]  # fmt: skip
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


def test_buf_finds_nothing_in_the_contracts() -> None:
    assert protolint.lint() == []


def test_every_extension_is_documented() -> None:
    fds = gen.descriptor_set()
    assert {f.name for f in fds.file} == {f.name for f in _files()}
    assert [e.name for f in fds.file for e in f.extension]
    assert lint_extension_comments(fds) == []


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
        "NotificationService.ListNotifications", "NotificationService.MarkNotificationsRead",
        "NotificationService.WatchNotifications", "NotificationService.SetPreferences",
        "NotificationService.RegisterPushSubscription", "NotificationService.ListDeadLetters",
    ]:  # fmt: skip
        assert rpc in methods, rpc
    services = {s.name for f in _files() for s in f.services_by_name.values()}
    assert services == {
        "CatalogService", "OrderService", "LocationService",
        "DispatchService", "EtaService", "PricingService", "NotificationService",
    }  # fmt: skip


def test_streaming_shapes_match_the_design() -> None:
    m = _methods()
    streams = set()
    for rpc in ("LocationService.StreamLocations", "DispatchService.DriverSession"):
        assert m[rpc].client_streaming and m[rpc].server_streaming, rpc
        streams.add(rpc)
    for rpc in (
        "OrderService.WatchOrder",
        "OrderService.WatchRestaurantOrders",
        "LocationService.TrackOrder",
        "NotificationService.WatchNotifications",
    ):
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
    has(catalog_pb2.SearchRestaurantsResponse, "restaurants", "total", "cursor")
    has(catalog_pb2.RestaurantSummary, "restaurant_id", "name", "cuisine", "rating",
        "review_count", "distance_miles", "delivery_time_min", "delivery_fee", "minimum_order",
        "is_open", "image_url", "location")  # fmt: skip
    has(order_pb2.PlaceOrderResponse, "order_id", "status", "restaurant", "items", "pricing",
        "estimated_delivery_time", "created_at")  # fmt: skip
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


#: Fields named like money that are not: the design's search response calls its hit count
#: ``total``.
_NOT_MONEY = {("SearchRestaurantsResponse", "total")}


def test_money_is_integer_minor_units_everywhere() -> None:
    money = common_pb2.Money.DESCRIPTOR
    assert money.fields_by_name["amount_minor"].type == _FD.TYPE_INT64
    for f in _files():
        for msg in _messages(list(f.message_types_by_name.values())):
            for field in msg.fields:
                if (msg.name, field.name) in _NOT_MONEY:
                    assert field.type == _FD.TYPE_INT32
                    continue
                if field.message_type is None and re.search(
                    r"(fee|price|total|subtotal|amount|tax|discount|tip)$", field.name
                ):
                    pytest.fail(f"{msg.name}.{field.name} is money but not Money")


# Contracts that break every rule, to prove the lints report each one.


def _bad_file() -> descriptor.FileDescriptor:
    """Breaks the project's rules (buf's naming rules are the other test's)."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        pool.AddSerializedFile(dep.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bad/bad.proto",
        package="bad.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    fdp.message_type.add(name="GetRequest")
    fdp.message_type.add(name="GetResponse")
    fdp.message_type.add(name="LonelyRequest")
    svc = fdp.service.add(name="ThingService")
    get = svc.method.add(
        name="Get", input_type=".bad.v1.GetRequest", output_type=".bad.v1.GetResponse"
    )
    rule = get.options.Extensions[annotations_pb2.http]
    rule.get = "/api/v1/things/{thing_id}"
    rule.body = "*"
    pool.Add(fdp)
    return pool.FindFileByName("bad/bad.proto")


@pytest.mark.parametrize(
    "expected",
    [
        "ThingService.Get: path variable {thing_id} is not a request field",
        "ThingService.Get: GET /api/v1/things/{thing_id} must not have a body",
        "ThingService.Get: no (foodmesh.v1.access) rule",
        "LonelyRequest is named like an RPC's but no RPC uses it",
    ],
)
def test_the_lint_catches_each_broken_rule(expected: str) -> None:
    problems = lint([_bad_file()])
    assert any(expected in p for p in problems), problems


_BAD_PROTO = """\
syntax = "proto3";

package things.v1;

import "google/api/annotations.proto";
import "google/protobuf/empty.proto";

// Things, named without the Service suffix.
service Things {
  // Gets a thing.
  rpc Get(thing_request) returns (google.protobuf.Empty);
  // Puts a thing, with Get's request.
  rpc Put(thing_request) returns (PutResponse);
}

// A request named in snake case.
message thing_request {
  string BadField = 1;
}

// Put's response.
message PutResponse {}

enum Color {
  // Red.
  RED = 0;
  // Blue.
  COLOR_Blue = 1;
}
"""


@pytest.fixture(scope="module")
def buf_on_a_bad_contract(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("bad-proto")
    (root / "things" / "v1").mkdir(parents=True)
    (root / "things" / "v1" / "things.proto").write_text(_BAD_PROTO)
    return protolint.lint(root)


@pytest.mark.parametrize(
    "rule",
    [
        "SERVICE_SUFFIX", "MESSAGE_PASCAL_CASE", "FIELD_LOWER_SNAKE_CASE",
        "RPC_REQUEST_STANDARD_NAME", "RPC_RESPONSE_STANDARD_NAME", "RPC_REQUEST_RESPONSE_UNIQUE",
        "ENUM_ZERO_VALUE_SUFFIX", "ENUM_VALUE_PREFIX", "ENUM_VALUE_UPPER_SNAKE_CASE",
        "IMPORT_USED", "COMMENT_FIELD", "COMMENT_ENUM",
    ],
)  # fmt: skip
def test_buf_lint_names_each_broken_rule(buf_on_a_bad_contract: list[str], rule: str) -> None:
    assert any(line.endswith(f"({rule})") for line in buf_on_a_bad_contract), buf_on_a_bad_contract


def test_buf_breaking_catches_a_deleted_field(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(gen.PROTO_ROOT, old)
    shutil.copytree(gen.PROTO_ROOT, new)
    common = new / "foodmesh" / "v1" / "common.proto"
    text = common.read_text()
    assert "int64 amount_minor = 1;" in text
    common.write_text(text.replace("int64 amount_minor = 1;", "reserved 1;"))
    assert protolint.breaking(old, old) == []
    broken = protolint.breaking(new, old)
    assert any("FIELD_NO_DELETE" in line and "Money" in line for line in broken), broken


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_breaking_compares_with_the_previous_commit_on_main_and_skips_without_one(
    tmp_path: Path,
) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "ci@example.invalid")
    _git(tmp_path, "config", "user.name", "ci")
    (tmp_path / "a").write_text("1")
    _git(tmp_path, "add", "a")
    _git(tmp_path, "commit", "-q", "-m", "first")
    assert "no parent commit" in str(protolint.baseline(tmp_path))
    (tmp_path / "a").write_text("2")
    _git(tmp_path, "commit", "-q", "-am", "second")
    base = protolint.baseline(tmp_path)
    assert base == protolint.Baseline(_head(tmp_path, "HEAD~1"), "the previous commit")
    _git(tmp_path, "checkout", "-q", "-b", "topic")
    (tmp_path / "a").write_text("3")
    _git(tmp_path, "commit", "-q", "-am", "third")
    main = _head(tmp_path, "main")
    assert protolint.baseline(tmp_path) == protolint.Baseline(main, "the merge base with main")
    _git(tmp_path, "checkout", "-q", "--detach", "main")  # a CI checkout of main's tip
    assert protolint.baseline(tmp_path) == base


def _head(repo: Path, ref: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", ref], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def test_the_extension_comment_lint_catches_an_undocumented_extension() -> None:
    fds = gen.descriptor_set()
    options = next(f for f in fds.file if f.name == "foodmesh/v1/options.proto")
    for loc in options.source_code_info.location:
        if tuple(loc.path) == (7, 0):
            loc.leading_comments = ""
    assert lint_extension_comments(fds) == [
        f"foodmesh/v1/options.proto: extension {options.extension[0].name} has no comment"
    ]
