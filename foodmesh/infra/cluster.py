"""Local clusters: a Redis Cluster and a NATS cluster with JetStream, from the same wheels.

The production shape (``k8s/overlays/prod``) runs Redis Cluster and a 3-node NATS
JetStream cluster with R3 streams. These start the same topologies on one machine,
for the scale-out suite (``tests/scaleout``) and for trying a change against them
(``foodmesh infra cluster up`` prints the ``FOODMESH_*_URL`` to export):

- :class:`LocalRedisCluster` — N primaries, each with a replica (6 valkey-server
  processes by default), slots split evenly; a killed primary's replica takes over
  after ``node_timeout_ms``. Its URL is ``redis+cluster://127.0.0.1:p1,...``.
- :class:`LocalNatsCluster` — N nats-server nodes routed to each other, JetStream
  on each; streams and buckets created with ``FOODMESH_NATS_REPLICAS=3`` keep three
  copies, so any one node can go. Its URL lists every node, comma-separated.

Ports are chosen once and kept in ``<root>/ports.json``: a node killed and started
again comes back where its peers look for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from foodmesh.infra._procs import free_port
from foodmesh.infra._servers import NatsServer, RedisServer, Server, ServerRecord
from foodmesh.infra.errors import InfraError

__all__ = ["SLOTS", "LocalNatsCluster", "LocalRedisCluster", "cluster_nodes"]

#: Hash slots of a Redis Cluster.
SLOTS = 16384


def _ports(root: Path, kind: str, count: int) -> list[int]:
    """``count`` ports for ``kind`` under ``root``, chosen on first use and kept."""
    path = root / "ports.json"
    known: dict[str, list[int]] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(path.read_text())
    if len(known.get(kind, [])) != count:
        known[kind] = [free_port() for _ in range(count)]
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
    return known[kind]


def _kill(server: Server) -> int:
    """SIGKILLs ``server`` (a crash, not a shutdown); returns the pid it had."""
    rec = server.running()
    if rec is None:
        raise InfraError(f"{server.name} is not running")
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.running() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return rec.pid


N = TypeVar("N", bound=Server)


class _LocalCluster(Generic[N]):
    """Nodes started together, killed and restarted one by one."""

    nodes: Sequence[N]

    def kill(self, index: int) -> int:
        """SIGKILLs node ``index`` (a crash, not a shutdown); returns its pid."""
        return _kill(self.nodes[index])

    async def restart(self, index: int, *, within: float = 30.0) -> ServerRecord:
        """Starts node ``index`` again on its ports; it rejoins the cluster (a Redis
        primary that was failed over comes back as a replica)."""
        return await self.nodes[index].ensure(ready_within=within)

    def down(self) -> list[str]:
        """Stops every node; returns the names of those that were running."""
        return [n.name for n in self.nodes if n.stop()]


# ---------------------------------------------------------------- Redis Cluster


class RedisClusterNode(RedisServer):
    """One valkey-server in cluster mode; its view of the cluster is ``<dir>/nodes.conf``."""

    def __init__(
        self, root: Path, index: int, port: int, *, bus: int, node_timeout_ms: int
    ) -> None:
        self.name = f"redis-{index}"
        super().__init__(root, durable=False)
        self.port = self.preferred_port = port
        self.bus = bus
        self.node_timeout_ms = node_timeout_ms

    def argv(self, binary: Path, port: int) -> list[str]:
        return [*super().argv(binary, port),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # Slots whose primary is down fail alone; the others keep serving.
                "--cluster-require-full-coverage", "no"]  # fmt: skip


async def _cmd(client: aioredis.Redis, *args: str | int) -> Any:
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def _info(raw: object) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )


class LocalRedisCluster(_LocalCluster[RedisClusterNode]):
    """``primaries`` primaries and as many replicas each, on 127.0.0.1 (see the module doc)."""

    def __init__(
        self, root: Path, *, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        self.root = root / "redis-cluster"
        self.primaries = primaries
        count = primaries * (1 + replicas)
        ports = _ports(self.root, "redis", 2 * count)  # clients', then the cluster bus's
        self.nodes = [
            RedisClusterNode(
                self.root, i, ports[i], bus=ports[count + i], node_timeout_ms=node_timeout_ms
            )  # fmt: skip
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    async def _on(self, node: Server, *commands: tuple[str | int, ...]) -> list[Any]:
        """Runs ``commands`` on ``node`` (a connection of their own); returns the replies."""
        rec = node.running()
        if rec is None:
            raise InfraError(f"{node.name} is not running")
        client = aioredis.Redis(host="127.0.0.1", port=rec.port, socket_timeout=2)
        try:
            return [await _cmd(client, *c) for c in commands]
        finally:
            await client.aclose()

    async def _each(self, *command: str) -> list[Any]:
        """``command``'s reply from every node, in order."""
        return [(await self._on(node, command))[0] for node in self.nodes]

    async def up(self, *, within: float = 30.0) -> str:
        """Starts the nodes, forms the cluster if it is not formed; returns the URL."""
        await asyncio.gather(*(n.ensure(ready_within=within) for n in self.nodes))
        infos = [_info(r) for r in await self._each("CLUSTER", "INFO")]
        formed = all(int(i.get("cluster_known_nodes", "0")) == len(self.nodes) for i in infos)
        if not formed:
            await self._form(within)
        await self.wait_healthy(within=within)
        return self.url

    async def _form(self, within: float) -> None:
        # A half-formed cluster (a start that died midway) is started over: dev data only.
        await self._each("FLUSHALL")
        await self._each("CLUSTER", "RESET", "HARD")
        ids = [(r.decode() if isinstance(r, bytes) else str(r))
               for r in await self._each("CLUSTER", "MYID")]  # fmt: skip
        per = SLOTS // self.primaries
        for i in range(self.primaries):
            last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * per - 1
            await self._on(self.nodes[i], ("CLUSTER", "ADDSLOTSRANGE", i * per, last))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await self._on(node, ("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus))
        deadline = time.monotonic() + within
        while True:
            infos = [_info(r) for r in await self._each("CLUSTER", "INFO")]
            if all(int(i.get("cluster_known_nodes", "0")) == len(self.nodes) for i in infos):
                break
            if time.monotonic() > deadline:
                raise InfraError(f"Redis Cluster nodes did not meet within {within:g}s")
            await asyncio.sleep(0.05)
        for j, node in enumerate(self.nodes[self.primaries :]):
            await self._on(node, ("CLUSTER", "REPLICATE", ids[j % self.primaries]))

    async def wait_healthy(self, *, within: float = 30.0) -> None:
        """Until every running node says the cluster is ok and every replica is in sync."""
        deadline = time.monotonic() + within
        last = ""
        while time.monotonic() < deadline:
            try:
                ok = True
                for node in self.nodes:
                    if node.running() is None:
                        continue
                    info, repl = map(
                        _info, await self._on(node, ("CLUSTER", "INFO"), ("INFO", "replication"))
                    )
                    if info.get("cluster_state") != "ok":
                        ok, last = False, f"{node.name}: cluster_state {info.get('cluster_state')}"
                    elif repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        ok, last = False, f"{node.name}: replica not in sync"
                if ok:
                    return
            except (RedisError, OSError, InfraError) as exc:
                last = str(exc)
            await asyncio.sleep(0.05)
        raise InfraError(f"Redis Cluster not healthy within {within:g}s: {last}")

    async def primary_for(self, key: str) -> int:
        """Index of the node that is the primary for ``key``'s slot right now."""
        for node in self.nodes:
            if node.running() is None:
                continue
            slot, slots = await self._on(node, ("CLUSTER", "KEYSLOT", key), ("CLUSTER", "SLOTS"))
            for start, end, primary, *_ in slots:
                if start <= int(slot) <= end:
                    port = int(primary[1])
                    return next(j for j, n in enumerate(self.nodes) if n.port == port)
        raise InfraError(f"no running node knows who serves {key!r}")


# ---------------------------------------------------------------- NATS cluster


class NatsClusterNode(NatsServer):
    """One nats-server of a cluster named ``foodmesh``, routed to every other node."""

    def __init__(
        self, root: Path, index: int, *, port: int, monitor: int, route: int, routes: list[int]
    ) -> None:
        self.name = f"nats-{index}"
        super().__init__(root, durable=True)
        self.index = index
        self.port = self.preferred_port = port
        self.monitor = monitor
        self.route = route
        self.routes = routes

    def monitor_port(self) -> int:
        return self.monitor

    def argv(self, binary: Path, port: int, monitor: int) -> list[str]:
        return [str(binary), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
                "-js", "-sd", str(self.dir / "jetstream"), "-n", f"foodmesh-n{self.index}",
                "--cluster_name", "foodmesh", "--cluster", f"nats://127.0.0.1:{self.route}",
                "--routes", ",".join(f"nats://127.0.0.1:{r}" for r in self.routes
                                     if r != self.route)]  # fmt: skip


async def _http_json(port: int, path: str) -> dict[str, object]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()
    body = raw.split(b"\r\n\r\n", 1)[-1]
    got = json.loads(body)
    if not isinstance(got, dict):
        raise InfraError(f"{path} answered {body[:80]!r}")
    return got


class LocalNatsCluster(_LocalCluster[NatsClusterNode]):
    """``size`` nats-server nodes with JetStream, routed to each other (see the module doc)."""

    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.root = root / "nats-cluster"
        ports = _ports(self.root, "nats", 3 * size)
        clients, monitors, routes = ports[:size], ports[size : 2 * size], ports[2 * size :]
        self.nodes = [
            NatsClusterNode(
                self.root, i, port=clients[i], monitor=monitors[i], route=routes[i], routes=routes
            )  # fmt: skip
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{n.port}" for n in self.nodes)

    async def up(self, *, within: float = 30.0) -> str:
        """Starts every node (together: JetStream waits for a quorum); returns the URL."""
        await asyncio.gather(*(n.ensure(ready_within=within) for n in self.nodes))
        await self.wait_meta_leader(within=within)
        return self.url

    async def meta_leader(self) -> str:
        """The server name of JetStream's meta leader, as a running node sees it ("" if none)."""
        for node in self.nodes:
            if node.running() is None:
                continue
            with contextlib.suppress(OSError, ValueError, TimeoutError, InfraError):
                jsz = await _http_json(node.monitor, "/jsz")
                meta = jsz.get("meta_cluster")
                if isinstance(meta, dict):
                    return str(meta.get("leader") or "")
        return ""

    async def stream_leader(self, stream: str) -> str:
        """The server name of ``stream``'s leader, as a running node sees it ("" if none)."""
        for node in self.nodes:
            if node.running() is None:
                continue
            with contextlib.suppress(OSError, ValueError, TimeoutError, InfraError):
                jsz = await _http_json(node.monitor, "/jsz?streams=true")
                for account in jsz.get("account_details") or []:  # type: ignore[attr-defined]
                    for detail in account.get("stream_detail") or []:
                        if detail.get("name") == stream:
                            return str((detail.get("cluster") or {}).get("leader") or "")
        return ""

    async def wait_stream_leader(
        self, stream: str, *, within: float = 30.0, other_than: str = ""
    ) -> str:
        """``stream``'s leader once it has one (and it is not ``other_than``)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            leader = await self.stream_leader(stream)
            if leader and leader != other_than:
                return leader
            await asyncio.sleep(0.05)
        raise InfraError(f"stream {stream} elected no leader within {within:g}s")

    async def wait_meta_leader(self, *, within: float = 30.0, other_than: str = "") -> str:
        """The meta leader once there is one (and it is not ``other_than``, a node just lost)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            leader = await self.meta_leader()
            if leader and leader != other_than:
                return leader
            await asyncio.sleep(0.05)
        raise InfraError(f"the NATS cluster elected no JetStream meta leader within {within:g}s")

    def index_of(self, server_name: str) -> int:
        """The node whose server name (``foodmesh-n<i>``) is ``server_name``."""
        return next(n.index for n in self.nodes if f"foodmesh-n{n.index}" == server_name)


def cluster_nodes(root: Path) -> list[Server]:
    """Every node of the local clusters ever started under ``root`` (to stop them all)."""
    nodes: list[Server] = []
    for kind, per_node in (("redis", 2), ("nats", 3)):
        try:
            ports = json.loads((root / f"{kind}-cluster" / "ports.json").read_text())[kind]
        except (OSError, ValueError, KeyError):
            continue
        count = len(ports) // per_node
        if kind == "redis":
            nodes += LocalRedisCluster(root, primaries=count, replicas=0).nodes
        else:
            nodes += LocalNatsCluster(root, size=count).nodes
    return nodes
