"""The gateway's settings and upstream targets."""

from __future__ import annotations

import pytest

from foodmesh.v1 import catalog_pb2, location_pb2, order_pb2
from gateway import ConfigError, GatewayConfig
from gateway._config import service_key

ORDER = order_pb2.DESCRIPTOR.services_by_name["OrderService"]
LOCATION = location_pb2.DESCRIPTOR.services_by_name["LocationService"]
CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]


def test_targets_come_from_env_or_the_known_default_ports() -> None:
    config = GatewayConfig.from_env(
        {"FOODMESH_GATEWAY_ORDER_TARGET": "orders.svc:7000", "FOODMESH_GATEWAY_PORT": "9000",
         "FOODMESH_GATEWAY_DEADLINE_S": "2.5", "FOODMESH_AUTH_SECRET": "s3cret" * 8}
    )  # fmt: skip
    assert config.target(ORDER) == "orders.svc:7000"
    assert config.target(LOCATION) == "127.0.0.1:7053"
    assert (config.port, config.deadline_s, config.auth_secret) == (9000, 2.5, "s3cret" * 8)
    assert config.stream_deadline_s == 3600.0 and config.heartbeat_s == 15.0


def test_only_the_listed_services_are_exposed() -> None:
    dev = {"FOODMESH_DEV": "1"}
    config = GatewayConfig.from_env({"FOODMESH_GATEWAY_SERVICES": "order, catalog", **dev})
    assert config.exposed([ORDER, LOCATION, CATALOG]) == [ORDER, CATALOG]
    assert GatewayConfig.from_env(dev).exposed([ORDER, LOCATION]) == [ORDER, LOCATION]
    assert [service_key(s) for s in (ORDER, LOCATION, CATALOG)] == ["order", "location", "catalog"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("FOODMESH_GATEWAY_DEADLINE_S", "soon"), ("FOODMESH_GATEWAY_DEADLINE_S", "-1"),
     ("FOODMESH_GATEWAY_PORT", "http")],
)  # fmt: skip
def test_a_wrong_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        GatewayConfig.from_env({name: value})
