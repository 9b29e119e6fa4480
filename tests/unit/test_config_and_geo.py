"""Typed settings, the error helpers and geo math: pure, no servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foodmesh.core.errors import ConfigError, InvalidArgument, Violations
from foodmesh.core.geo import (
    geohash_decode,
    geohash_encode,
    geohash_neighbors,
    haversine_m,
)
from foodmesh.core.redis import Keys
from foodmesh.core.services import KNOWN
from servers.runtime.config import Settings


def test_settings_read_service_specific_port_and_urls() -> None:
    s = Settings.from_env(
        "order",
        {
            "FOODMESH_ORDER_PORT": "7052",
            "FOODMESH_POSTGRES_URL": "postgresql://u@h:5432/db",
            "FOODMESH_DEFAULT_DEADLINE_S": "2.5",
            "FOODMESH_NAMESPACE": "t1",
            "FOODMESH_DEV": "1",
        },
    )
    assert (s.port, s.postgres_url, s.default_deadline_s, s.namespace) == (
        7052,
        "postgresql://u@h:5432/db",
        2.5,
        "t1",
    )


def test_default_ports_sit_below_the_ephemeral_range() -> None:
    # In the range, any outgoing connection on the machine may hold a service's port, and
    # the service then cannot bind it ("Address already in use") until that one closes.
    low = 32768  # Linux's default start; the IANA range starts at 49152
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = min(low, int(f.read().split()[0]))
    except OSError:
        pass
    ports = {p for s in KNOWN for p in (s.grpc_port, s.metrics_port)}
    assert len(ports) == 2 * len(KNOWN)
    assert max(ports) < low, sorted(ports)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FOODMESH_ORDER_PORT": "abc"}, "FOODMESH_ORDER_PORT='abc'"),
        ({"FOODMESH_PORT": "70000"}, "FOODMESH_PORT=70000"),
        ({"FOODMESH_REDIS_URL": "localhost:6379"}, "FOODMESH_REDIS_URL"),
        ({"FOODMESH_DEFAULT_DEADLINE_S": "-1"}, "FOODMESH_DEFAULT_DEADLINE_S"),
        ({"FOODMESH_METRICS": "perhaps"}, "FOODMESH_METRICS"),
        ({"FOODMESH_LOG_LEVEL": "loud"}, "FOODMESH_LOG_LEVEL"),
        ({"FOODMESH_NAMESPACE": "a b"}, "FOODMESH_NAMESPACE"),
    ],
)
def test_a_wrong_setting_is_an_error_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env("order", env)
    assert named in err.value.message
    assert "\n" not in err.value.message


def test_violations_collect_every_bad_field() -> None:
    v = Violations()
    v.check(False, "restaurant_id", "must be set")
    v.check(True, "items", "fine")
    v.check(False, "delivery_address.lat", "must be within [-90, 90]")
    with pytest.raises(InvalidArgument) as err:
        v.raise_if_any()
    assert [x.field for x in err.value.violations] == ["restaurant_id", "delivery_address.lat"]


def test_region_keys_share_a_cluster_hash_tag() -> None:
    k = Keys("t1")
    assert k.region("drivers", "9q8y", "geo") == "t1:drivers:{9q8y}:geo"
    assert k.key("route", "abc") == "t1:route:abc"
    with pytest.raises(ValueError):
        k.region("drivers", "9q{8")


def test_geohash_matches_the_reference_value() -> None:
    # The design's example point, San Francisco.
    assert geohash_encode(37.7749, -122.4194, 6) == "9q8yyk"
    assert geohash_encode(57.64911, 10.40744, 11) == "u4pruydqqvj"  # geohash.org's example


@given(
    st.floats(min_value=-89.9, max_value=89.9),
    st.floats(min_value=-179.9, max_value=179.9),
    st.integers(min_value=1, max_value=9),
)
def test_a_point_lies_inside_its_own_cell(lat: float, lon: float, precision: int) -> None:
    lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(geohash_encode(lat, lon, precision))
    assert lat_lo <= lat <= lat_hi and lon_lo <= lon <= lon_hi


def test_neighbors_surround_the_cell() -> None:
    around = geohash_neighbors("9q8yy")
    assert len(around) == 8 and "9q8yy" not in around
    assert all(len(c) == 5 for c in around)


def test_haversine_sf_to_oakland_is_about_13_km() -> None:
    d = haversine_m(37.7749, -122.4194, 37.8044, -122.2712)
    assert 13_000 < d < 13_500
