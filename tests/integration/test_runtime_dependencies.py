"""A service's health follows its real dependencies: PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.errors import KeyWrongLastSequenceError

from foodmesh.core.errors import ConfigError
from foodmesh.core.nats import Subjects, ensure_kv, replicas
from servers.runtime.config import Settings
from servers.runtime.serve import Dependency, Resources, ServiceSpec, StartupError, run_service

ALL = frozenset(Dependency)


async def _register(server: grpc.aio.Server, resources: Resources) -> None:
    return None


SPEC = ServiceSpec(name="probe", grpc_services=("test.Probe",), register=_register, needs=ALL)


def settings(urls: Any, namespace: str, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        service="probe",
        postgres_url=urls.postgres_url,
        redis_url=urls.redis_url,
        nats_url=urls.nats_url,
        namespace=namespace,
        startup_timeout_s=5.0,
        health_check_interval_s=0.1,
        metrics_enabled=False,
    )
    base.update(kw)
    return Settings(**base)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_service_serves_once_postgres_redis_and_nats_answer(
    infra: Any, namespace: str
) -> None:
    async with run_service(SPEC, settings(infra.urls, namespace)) as svc:
        async with grpc.aio.insecure_channel(svc.target) as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="test.Probe"), timeout=2
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        r = svc.resources
        async with r.pg.connection() as conn:
            cur = await conn.execute("SELECT 41 + 1")
            assert await cur.fetchone() == (42,)
        key = r.keys.region("drivers", "9q8y", "geo")
        assert key == f"{namespace}:drivers:{{9q8y}}:geo"
        await r.redis.set(key, "x")
        assert await r.redis.get(key) == b"x"
        sub = await r.nats.subscribe(r.subjects.subject("location.v1.driver.d1"))
        await r.nats.publish(r.subjects.subject("location.v1.driver.d1"), b"fix")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"fix" and msg.subject.startswith(f"{namespace}.")


async def test_service_never_serves_while_redis_is_unreachable(infra: Any, namespace: str) -> None:
    bad = settings(infra.urls, namespace, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with run_service(SPEC, bad, wait_ready=False) as svc:
        assert not await svc.health.wait_serving(1.0)
        assert set(svc.health.failing) == {"redis"}
        async with grpc.aio.insecure_channel(svc.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            ready = await stub.Check(health_pb2.HealthCheckRequest(service="test.Probe"), timeout=2)
            alive = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=2)
        # not ready (Redis is away), but alive: a liveness probe must not restart it for that
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert alive.status == health_pb2.HealthCheckResponse.SERVING


def test_nats_replicas_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOODMESH_NATS_REPLICAS", raising=False)
    assert replicas() == 1
    monkeypatch.setenv("FOODMESH_NATS_REPLICAS", "3")
    assert replicas() == 3
    for bad in ("0", "seven", "9"):
        monkeypatch.setenv("FOODMESH_NATS_REPLICAS", bad)
        with pytest.raises(ConfigError, match="FOODMESH_NATS_REPLICAS"):
            replicas()


async def test_startup_gives_up_naming_the_unreachable_database(infra: Any, namespace: str) -> None:
    bad = settings(
        infra.urls,
        namespace,
        postgres_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
        startup_timeout_s=1.0,
    )
    with pytest.raises(StartupError, match="postgres.*PostgreSQL at 127.0.0.1"):
        async with run_service(SPEC, bad):
            pass


async def test_missing_url_is_a_startup_error_naming_the_variable(namespace: str) -> None:
    s = Settings(service="probe", redis_url="", postgres_url="", nats_url="", metrics_enabled=False)
    with pytest.raises(StartupError, match="FOODMESH_POSTGRES_URL"):
        async with run_service(SPEC, s):
            pass


async def test_kv_bucket_is_created_once_and_shared(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        bucket = Subjects(namespace).bucket("leases")
        first, second = await asyncio.gather(
            ensure_kv(js, bucket, ttl_s=5), ensure_kv(js, bucket, ttl_s=5)
        )
        rev = await first.create("region.9q8y", b"dispatch-1")
        with pytest.raises(KeyWrongLastSequenceError):
            await second.create("region.9q8y", b"dispatch-2")  # the lease is taken
        entry = await second.get("region.9q8y")
        assert entry.value == b"dispatch-1" and entry.revision == rev
        await js.delete_key_value(bucket)
    finally:
        await nc.close()
