"""`foodmesh up` as a user runs it: every service and the gateway, driven over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.infra import RunningInfra
from foodmesh.services import KNOWN, available


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _auth(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEV_SECRET, subject=subject, role=role)}"}


async def test_up_serves_the_mesh_through_the_gateway(
    infra: RunningInfra, namespace: str, tmp_path: Path
) -> None:
    ports = [s.grpc_port for s in available()] + [s.metrics_port for s in available()]
    ports += [8080, 8090, 9100]
    if any(_busy(p) for p in ports):
        pytest.skip("a foodmesh is already running on this machine's default ports")
    env = {
        **os.environ,
        "FOODMESH_POSTGRES_URL": infra.urls.postgres_url,
        "FOODMESH_REDIS_URL": infra.urls.redis_url,
        "FOODMESH_NATS_URL": infra.urls.nats_url,
        "FOODMESH_NAMESPACE": namespace,
        "FOODMESH_STATE_DIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        # a small city and no simulator: this test drives the mesh itself
        sys.executable, "-m", "foodmesh", "up", "--no-sim", "--restaurants", "20",
        "--drivers", "5", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        printed: list[bytes] = []
        async with asyncio.timeout(60):
            while b"foodmesh is up" not in (line := await proc.stdout.readline()):
                assert line, "foodmesh up exited before it was up"
                printed.append(line)
            assert b"gateway http://127.0.0.1:8080" in line
            # then the links: the dashboard's carries an ops token (issue 17)
            while not (line := await proc.stdout.readline()).startswith(b"dashboard: "):
                assert line, "foodmesh up printed no dashboard link"
                printed.append(line)
        links = [x for x in printed if b": http://" in x]  # up's own "name: url" lines
        assert links[0].startswith(b"gateway: http://127.0.0.1:8080"), printed
        # The first URL of the whole output (logs included) is the gateway's: tools take it.
        first_url = next(m for ln in printed if (m := re.search(rb"https?://\S+", ln)))
        assert first_url.group() == b"http://127.0.0.1:8080", printed[:5]
        drain = asyncio.create_task(proc.stdout.read())  # the logs go on: keep the pipe empty
        link = line.decode().split(" ", 1)[1].strip()
        dashboard, _, ops_token = link.partition("/#token=")
        assert dashboard == "http://127.0.0.1:8090" and ops_token
        base = "http://127.0.0.1:8080"
        now = dt.datetime.now(dt.UTC).isoformat()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{dashboard}/api/snapshot") as r:
                assert r.status == 401
            ops = {"Authorization": f"Bearer {ops_token}"}
            async with http.get(f"{dashboard}/api/snapshot", headers=ops) as r:
                assert r.status == 200
            # "up" once every process runs; ready once every upstream answers SERVING
            upstreams: object = None  # the last answer, to name who is not serving
            try:
                async with asyncio.timeout(60):
                    while True:
                        async with http.get(f"{base}/readyz") as r:
                            if r.status == 200:
                                break
                            upstreams = (await r.json())["upstreams"]
                        await asyncio.sleep(0.5)
            except TimeoutError:
                pytest.fail(f"not ready in 60 s: {upstreams}")
            fix = {"lat": 37.7749, "lon": -122.4194, "accuracy": 4.0, "timestamp": now}
            async with http.post(
                f"{base}/api/v1/drivers/location", json=fix, headers=_auth("driver", "drv_e2e")
            ) as r:
                assert r.status == 204 and await r.read() == b""
            async with http.get(
                f"{base}/api/v1/drivers/drv_e2e/location", headers=_auth("ops", "ops_1")
            ) as r:
                assert r.status == 200
                body = await r.json()
            assert (body["position"]["lat"], body["position"]["lon"]) == (37.7749, -122.4194)
            async with http.post(
                f"{base}/api/v1/drivers/location",
                json={**fix, "lat": 91},
                headers=_auth("driver", "drv_e2e"),
            ) as r:
                assert r.status == 400
                err = await r.json()
            violations = [d for d in err["details"] if d["@type"].endswith("BadRequest")]
            assert violations[0]["field_violations"][0]["field"] == "lat"
            # the gateway's own Prometheus metrics, by route template and status
            async with http.get("http://127.0.0.1:9100/metrics") as r:
                metrics = await r.text()
            assert (
                'foodmesh_gateway_request_seconds_count{code="400",method="POST",'
                'route="/api/v1/drivers/location"} 1.0'
            ) in metrics
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await proc.wait()
    await drain
    assert proc.returncode == 0
    assert not any(_busy(s.grpc_port) for s in KNOWN)
