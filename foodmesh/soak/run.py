"""A soak run: the platform started and supervised, the city driven, the faults applied on
schedule, every call recorded; then the audit, the logs and the memory read back.

Everything a run starts lives under its output folder (``state/`` holds the servers'
data, ``logs/`` each process's output) and is stopped on the way out, however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foodmesh.infra import free_port
from foodmesh.soak.audit import Audit, AuditSettings, driver_limit, run_audit
from foodmesh.soak.faults import Fault, FaultSchedule
from foodmesh.soak.timeline import FaultWindow, Timeline, call_kind

__all__ = ["SoakConfig", "SoakResult", "cpu_use", "memory_growth", "run_soak", "scan_logs"]

_log = logging.getLogger("foodmesh.soak")
#: The default city's mean rate (foodmesh up): --load multiplies it.
BASE_ORDERS_PER_HOUR = 200.0
#: What a log line of an unhandled error looks like (a traceback nobody caught, a task
#: whose exception nobody read, a callback that raised).
_UNHANDLED = re.compile(
    r"Traceback \(most recent call last\)|Task exception was never retrieved"
    r"|Exception in callback|Unhandled exception|\bCRITICAL\b|unexpected error"
    r"|Fatal Python error"
)


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """How long, how busy, which faults, where the results go."""

    duration_s: float
    load: float
    schedule: FaultSchedule
    out_dir: Path
    seed: int = 7
    drivers: int = 2000
    restaurants: int = 200
    customers: int = 2000
    #: Kitchens and roads faster than life, so orders finish within a run (1: real time).
    prep_scale: float = 0.25
    travel_scale: float = 0.25
    #: After the load: time for the outboxes and consumers to catch up before the audit.
    settle_s: float = 60.0
    audit: AuditSettings = field(default_factory=AuditSettings)
    #: Customers' SSE streams kept open at once (cut by the ``cut sse`` fault).
    watchers: int = 20
    keep_infra: bool = False
    #: The state folder of a running ``foodmesh up`` to soak, instead of a platform of its own.
    target: Path | None = None

    @property
    def orders_per_hour(self) -> float:
        return BASE_ORDERS_PER_HOUR * self.load


@dataclass(slots=True)
class SoakResult:
    """What a run leaves for the report."""

    config: SoakConfig
    timeline: Timeline
    windows: list[FaultWindow]
    audit: Audit
    acknowledged: list[str]
    unhandled: dict[str, list[str]]
    memory: dict[str, Any]
    restarts: dict[str, int]
    #: Exits the faults did not cause (a crash), by process.
    unexpected_exits: dict[str, int]
    sim: dict[str, Any]
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    #: Per process: CPU seconds over the run and the mean share of one core.
    cpu: dict[str, Any] = field(default_factory=dict)


def _with_port(url: str, port: int) -> str:
    return re.sub(r"@?(127\.0\.0\.1|localhost):\d+", lambda m: m.group(0).rsplit(":", 1)[0]
                  + f":{port}", url, count=1)  # fmt: skip


def _port_of(url: str) -> int:
    m = re.search(r":(\d+)(/|$)", url.split("@")[-1])
    if m is None:
        raise ValueError(f"no port in {url}")
    return int(m.group(1))


class _Proxy:
    """The latency/cut proxy process and its control file."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.state: dict[str, dict[str, float]] = {"delay_ms": {}, "cut": {}}
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}

    async def start(self, routes: dict[str, int], log: Path) -> dict[str, int]:
        self._write()
        err = await asyncio.to_thread(open, log, "ab")
        with err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "foodmesh.soak.proxy", "--control", str(self.control),
                *(f"{k}={v}" for k, v in routes.items()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
        self.ports = {k: int(v) for k, v in json.loads(line).items()}
        return self.ports

    def _write(self) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.control)

    def delay(self, name: str, ms: float) -> None:
        self.state["delay_ms"][name] = ms
        self._write()

    def cut(self, name: str) -> None:
        self.state["cut"][name] = self.state["cut"].get(name, 0) + 1
        self._write()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_ticks(pid: int) -> int | None:
    """User plus system CPU time of ``pid`` so far, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # The command may hold spaces and parentheses: fields count from the last ')'.
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def cpu_use(samples: list[tuple[float, str, int, int]], *,
            tick_s: float = 0.01) -> dict[str, Any]:  # fmt: skip
    """Per process: CPU seconds over the run and the mean share of one core they make.

    ``samples`` are (t, name, pid, ticks); each incarnation counts from its first sample
    to its last, and the share divides by the whole sampled span.
    """
    by: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for t, name, pid, ticks in samples:
        by.setdefault((name, pid), []).append((t, ticks))
    if not by:
        return {}
    span = max(t for t, *_ in samples) - min(t for t, *_ in samples)
    seconds: dict[str, float] = {}
    for (name, _pid), series in by.items():
        seconds[name] = seconds.get(name, 0.0) + (series[-1][1] - series[0][1]) * tick_s
    return {name: {"cpu_s": round(sec, 1), "cores": round(sec / span, 3) if span > 0 else 0.0}
            for name, sec in sorted(seconds.items())}  # fmt: skip


def memory_growth(samples: list[tuple[float, str, int, int]], *, warmup_s: float,
                  limit: float = 0.20) -> dict[str, Any]:  # fmt: skip
    """Per process: the RSS growth from the end of its warm-up to the end of its life.

    Each incarnation (a restarted process is a new one) is measured from ``warmup_s`` after
    its own first sample; one that did not live three minutes past its warm-up says nothing
    and is left out. Growth compares the median of the first and of the last five samples.
    """
    by: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for t, name, pid, kib in samples:
        by.setdefault((name, pid), []).append((t, kib))
    out: dict[str, Any] = {}
    for (name, _pid), series in sorted(by.items()):
        born = series[0][0]
        measured = [kib for t, kib in series if t >= born + warmup_s]
        if len(series) < 2 or series[-1][0] - (born + warmup_s) < 180 or len(measured) < 10:
            continue
        first = sorted(measured[:5])[2]
        last = sorted(measured[-5:])[2]
        growth = (last - first) / first if first else 0.0
        prev = out.get(name)
        if prev is None or growth > prev["growth"]:
            out[name] = {"start_mib": round(first / 1024, 1), "end_mib": round(last / 1024, 1),
                         "growth": round(growth, 4), "ok": growth <= limit}  # fmt: skip
    return out


def scan_logs(log_dir: Path) -> dict[str, list[str]]:
    """Each log's lines that show an unhandled error (see ``_UNHANDLED``), by process."""
    out: dict[str, list[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        hits = []
        with open(path, errors="replace") as fh:
            lines = fh.readlines()
        for i, line in enumerate(lines):
            if _UNHANDLED.search(line):
                # The line that says what raised: the traceback's last line.
                tail = line.strip()
                if "Traceback" in line:
                    for nxt in lines[i + 1 : i + 200]:
                        if nxt and not nxt.startswith((" ", "\t")) and nxt.strip():
                            tail = f"{line.strip()} ... {nxt.strip()}"
                            break
                hits.append(tail[:400])
        if hits:
            out[path.stem] = hits
    return out


class _Processes:
    """A running ``foodmesh up``'s processes, as its supervisor records them (pids change
    when it restarts one): ``<state>/processes.json``."""

    def __init__(self, state: Path) -> None:
        self.path = state / "processes.json"

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(p["name"]): p for p in data.get("processes", []) if "name" in p}

    def pid(self, name: str) -> int | None:
        pid = self.read().get(name, {}).get("pid")
        return int(pid) if pid else None

    def live(self) -> list[tuple[str, int]]:
        return [(n, int(p["pid"])) for n, p in self.read().items()
                if p.get("pid") and os.path.exists(f"/proc/{p['pid']}")]  # fmt: skip


def _environ(pid: int | None) -> dict[str, str]:
    """A process's environment (Linux), or nothing when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes() if pid else b""
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


class _Run:
    """One soak's live state (see :func:`run_soak`)."""

    def __init__(self, config: SoakConfig) -> None:
        self.c = config
        self.t0 = time.monotonic()
        self.timeline = Timeline()
        self.acked: list[str] = []
        self.customers: dict[str, str] = {}
        self.windows: list[FaultWindow] = []
        self.memory: list[tuple[float, str, int, int]] = []
        self.notes: list[str] = []
        self.open_orders: list[str] = []
        self.kills: dict[str, int] = {}
        #: CPU samples: (t, name, pid, ticks).
        self.cpu: list[tuple[float, str, int, int]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def observe(self, method: str, path: str, status: int, seconds: float,
                body: dict[str, Any]) -> None:  # fmt: skip
        kind = "location_ack" if path == "location_ack" else call_kind(method, path)
        # A call is placed in time by when it was made: a fix sent before a cut and never
        # acknowledged failed at the cut, not when its driver noticed.
        self.timeline.add(self.now() - seconds, kind, status, seconds)
        if kind == "place_order" and 200 <= status < 300:
            order = body.get("order") or {}
            oid = str(order.get("order_id", ""))
            if oid:
                # The idempotent replay of a placement answers the same order again.
                if oid not in self.customers:
                    self.acked.append(oid)
                    self.open_orders.append(oid)
                self.customers[oid] = str(order.get("customer_id", ""))


async def _watchers(run: _Run, gateway: str, tokens: Any, stop: asyncio.Event) -> None:
    """Customers watching their orders on SSE through the proxy, reconnecting when cut."""
    import aiohttp

    sem = asyncio.Semaphore(run.c.watchers)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
    tasks: set[asyncio.Task[None]] = set()

    async def watch(http: aiohttp.ClientSession, order_id: str) -> None:
        customer = run.customers.get(order_id, "")
        last_id = ""
        deadline = time.monotonic() + 600
        async with sem:
            while not stop.is_set() and time.monotonic() < deadline:
                headers = {"Accept": "text/event-stream",
                           "Authorization": tokens.header("customer", customer)}  # fmt: skip
                if last_id:
                    headers["Last-Event-ID"] = last_id
                t = time.perf_counter()
                try:
                    async with http.get(f"{gateway}/api/v1/orders/{order_id}/watch",
                                        headers=headers,
                                        timeout=timeout) as resp:  # fmt: skip
                        run.timeline.add(run.now(), "watch", resp.status, time.perf_counter() - t)
                        if resp.status != 200:
                            return
                        async for raw in resp.content:
                            line = raw.decode(errors="replace").strip()
                            if line.startswith("id:"):
                                last_id = line[3:].strip()
                            if (
                                '"ORDER_STATUS_DELIVERED"' in line
                                or '"ORDER_STATUS_CANCELLED"' in line
                            ):
                                return
                        return
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    run.timeline.add(run.now(), "watch", 0, time.perf_counter() - t)
                    await asyncio.sleep(1.0)

    async with aiohttp.ClientSession() as http:
        try:
            while not stop.is_set():
                while run.open_orders and len(tasks) < run.c.watchers * 2:
                    oid = run.open_orders.pop(0)
                    task = asyncio.create_task(watch(http, oid))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                run.open_orders.clear()  # only the newest are watched: an app in front
                await asyncio.sleep(1.0)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _sample_memory(run: _Run, children: Callable[[], list[tuple[str, int]]],
                         others: Callable[[], list[tuple[str, int]]],
                         stop: asyncio.Event) -> None:  # fmt: skip
    """Every 5 s: each service's RSS, and the CPU of every process (the city's own too)."""
    while not stop.is_set():
        now = run.now()
        for name, pid in children():
            kib = _rss_kib(pid)
            if kib is not None:
                run.memory.append((now, name, pid, kib))
        for name, pid in [*children(), *others()]:
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                run.cpu.append((now, name, pid, ticks))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await stop.wait()


async def _until(check: Callable[[], Awaitable[bool]], *, within_s: float,
                 every_s: float = 0.25) -> bool:  # fmt: skip
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            if await check():
                return True
        await asyncio.sleep(every_s)
    return False


def _order_env(c: SoakConfig) -> dict[str, str]:
    """Order voids the card hold of a placement killed before its order was written once the
    claim (60 s) and ``HOLD_GRACE_S`` have passed (300 s by default). Here that comes
    within the audit's grace, so the audit judges the platform's voiding, not its
    schedule (a CI mini-soak's kill left one hold, counted lingering at 120 s)."""
    sweep_s = 20.0  # Order's orphan-hold pass comes every 20 sweeps of 0.5 s, and slack
    return {"FOODMESH_ORDER_HOLD_GRACE_S": f"{max(5.0, c.audit.grace_s - 60.0 - sweep_s):g}"}


async def run_soak(config: SoakConfig) -> SoakResult:  # noqa: C901 — one story, told in order
    """Runs the whole soak and returns what it saw; never leaves a process behind."""
    from foodmesh import infra
    from foodmesh.commands.migrate import migrate_services
    from foodmesh.commands.seed import seed_into
    from foodmesh.commands.up import city_dispatch, platform_specs
    from foodmesh.core.auth import auth_settings
    from foodmesh.infra._servers import NatsServer, PostgresServer, RedisServer
    from foodmesh.services import available
    from foodmesh.sim.agents import SimConfig, Stats, Tokens
    from foodmesh.sim.run import run_sim, wait_for_gateway
    from foodmesh.supervisor import Supervisor, probe_health

    os.environ.setdefault("FOODMESH_DEV", "1")
    # A process that crashes in C (a segfault) leaves its Python stack in its log.
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    c = config
    out = c.out_dir
    # Soaking a running `foodmesh up`: its stores and processes, found in its state folder.
    target = c.target
    state = target or out / "state"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # The soak's own process (the simulated city) is audited like the others: soak.log.
    own_log = logging.FileHandler(logs / "soak.log")
    own_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s %(message)s"))
    logging.getLogger().addHandler(own_log)
    run = _Run(c)
    services = available()
    names = [s.name for s in services]
    ports = {s.name: (free_port(), free_port()) for s in services}
    gateway_port = free_port()
    proxy = _Proxy(out / "proxy-control.json")
    supervisor: Supervisor | None = None
    runner: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    background: list[asyncio.Task[Any]] = []
    sim_stats = Stats(started=time.monotonic())
    sim_stats.observe = run.observe
    audit = Audit()
    started_at = time.monotonic()
    procs = _Processes(state)
    restarts_before: dict[str, int] = {}
    dispatch_env = _dispatch_env(c)
    try:
        env_free = {k: v for k, v in os.environ.items() if k not in infra.ENV_VARS.values()}
        servers = {"postgres": PostgresServer(state, durable=True),
                   "redis": RedisServer(state, durable=True),
                   "nats": NatsServer(state, durable=True)}  # fmt: skip
        if target is not None:
            print(f"soak: soaking the platform `foodmesh up` runs from {target}", flush=True)
            st = await infra.status(target, env=env_free)
            if not st.all_running or st.urls is None:
                raise RuntimeError(f"no running infrastructure under {target} (`foodmesh up`?)")
            urls = st.urls
            running = procs.read()
            missing = [n for n in (*names, "gateway") if n not in running]
            if missing:
                raise RuntimeError(f"`foodmesh up` under {target} runs no {', '.join(missing)}")
            ports = {n: (int(running[n]["grpc_port"]), 0) for n in names}
            gateway_port = _port_of(str(running["gateway"]["http_url"]))
            restarts_before = {n: int(p.get("restarts", 0)) for n, p in running.items()}
            # Dispatch's own settings, as the running process has them (K for the audit).
            dispatch_env = {k: v for k, v in _environ(procs.pid("dispatch")).items()
                            if k.startswith("FOODMESH_DISPATCH_")} or city_dispatch()  # fmt: skip
            # The services reach the stores directly: only the drivers' and the customers'
            # streams can go through the proxy (no latency faults; see the notes).
            proxied = await proxy.start(
                {"location": ports["location"][0], "sse": gateway_port},
                out / "logs" / "proxy.log",
            )  # fmt: skip
        else:
            print(f"soak: starting the infrastructure under {state}", flush=True)
            urls = await infra.up(state, durable=True, env=env_free)
            proxied = await proxy.start(
                {"postgres": _port_of(urls.postgres_url), "redis": _port_of(urls.redis_url),
                 "location": ports["location"][0], "sse": gateway_port},
                out / "logs" / "proxy.log",
            )  # fmt: skip
            through = {
                "FOODMESH_POSTGRES_URL": _with_port(urls.postgres_url, proxied["postgres"]),
                "FOODMESH_REDIS_URL": _with_port(urls.redis_url, proxied["redis"]),
                "FOODMESH_NATS_URL": urls.nats_url,
            }
            await migrate_services(names, urls.postgres_url)
            specs = platform_specs(services, through, state, gateway_port=str(gateway_port),
                                   dashboard_port="0", dashboard=False, ports=ports,
                                   gateway_metrics_port=str(free_port()),
                                   extra_env={"dispatch": dispatch_env,
                                              "order": _order_env(c)})  # fmt: skip
            supervisor = Supervisor(specs, state_dir=state, log_dir=logs, grace_s=10.0,
                                    max_deaths_per_minute=10)  # fmt: skip
            ready = asyncio.Event()
            runner = asyncio.create_task(supervisor.run(on_ready=ready))
            await asyncio.wait([runner, asyncio.create_task(ready.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not ready.is_set():
                raise RuntimeError("the platform did not start (see the logs)")
        gateway = f"http://127.0.0.1:{gateway_port}"
        if target is not None:
            run.notes.append(f"soaked the running platform of {target}: its processes' "
                             "output is `foodmesh up`'s, not scanned for errors here")  # fmt: skip
        if not await wait_for_gateway(gateway, within_s=120):
            raise RuntimeError(f"the gateway at {gateway} is not ready (see {logs})")
        print(f"soak: platform up (logs in {logs}); seeding the city", flush=True)
        city = argparse.Namespace(seed=c.seed, restaurants=c.restaurants, drivers=c.drivers)
        await seed_into(city, f"127.0.0.1:{ports['catalog'][0]}",
                        f"127.0.0.1:{ports['dispatch'][0]}")  # fmt: skip
        secret = auth_settings(process="soak").secret
        sim = SimConfig(
            gateway=gateway, location_target=f"127.0.0.1:{proxied['location']}",
            dispatch_target=f"127.0.0.1:{ports['dispatch'][0]}", seed=c.seed,
            restaurants=c.restaurants, drivers=c.drivers, customers=c.customers,
            orders_per_hour=c.orders_per_hour, flat_demand=True, duration_s=c.duration_s,
            shifts=False, prep_scale=c.prep_scale, travel_scale=c.travel_scale,
            auth_secret=secret, progress_every_s=30.0, ramp_s=min(60.0, c.duration_s / 6),
        )  # fmt: skip
        own = supervisor
        by_name = {ch.spec.name: ch for ch in own.children} if own is not None else {}
        health_ports = {n: p for n, (p, _) in ports.items()}

        def children() -> list[tuple[str, int]]:
            if own is None:
                return procs.live()
            return [(ch.spec.name, ch.proc.pid) for ch in own.children
                    if ch.proc is not None and ch.proc.returncode is None]  # fmt: skip

        def pid_of(name: str) -> int | None:
            if own is None:
                return procs.pid(name)
            proc = by_name[name].proc
            return proc.pid if proc is not None and proc.returncode is None else None

        def others() -> list[tuple[str, int]]:
            """Beside the services: this process (the simulated city), the proxy, Redis, NATS.

            (PostgreSQL works in a process per connection, which come and go: not sampled.)
            """
            out = [("soak (the city)", os.getpid())]
            if proxy.proc is not None and proxy.proc.returncode is None:
                out.append(("proxy", proxy.proc.pid))
            for n in ("redis", "nats"):
                rec = servers[n].running()
                if rec is not None:
                    out.append((n, rec.pid))
            return out

        async def serving(name: str, old_pid: int | None) -> bool:
            pid = pid_of(name)
            if pid is None or pid == old_pid:
                return False
            if name in health_ports:
                return await probe_health(health_ports[name]) == "SERVING"
            import aiohttp

            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{gateway}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp,
            ):
                return resp.status == 200

        async def apply(f: Fault) -> None:
            start = run.now()
            allowance = 10.0
            print(f"soak: {start:7.1f}s {f.label}", flush=True)
            if f.kind == "latency" and target is not None:
                run.notes.append(f"{f.label}: skipped (the target's services reach the stores "
                                 "directly, not through the soak's proxy)")  # fmt: skip
                return
            if f.kind == "kill":
                killed = {n: pid_of(n) for n in f.targets}
                for n in f.targets:
                    run.kills[n] = run.kills.get(n, 0) + 1
                    if (victim := killed[n]) is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(victim, signal.SIGKILL)
                for n in f.targets:
                    if not await _until(functools.partial(serving, n, killed[n]), within_s=120):
                        run.notes.append(f"{f.label}: {n} not serving 120 s after the kill")
            elif f.kind == "restart":
                allowance = 30.0
                for n in f.targets:
                    await asyncio.to_thread(servers[n].stop)
                    await infra.up(state, durable=True, env=env_free, ready_within=60)
            elif f.kind == "pause":
                pids = {}
                for n in f.targets:
                    if n in servers:
                        rec = servers[n].running()
                        pid = rec.pid if rec else None
                    else:
                        pid = pid_of(n)
                    if pid:
                        pids[n] = pid
                        os.kill(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(f.duration_s)
                finally:
                    for pid in pids.values():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGCONT)
            elif f.kind == "latency":
                for n in f.targets:
                    proxy.delay(n, f.delay_ms)
                try:
                    await asyncio.sleep(f.duration_s)
                finally:
                    for n in f.targets:
                        proxy.delay(n, 0)
            elif f.kind == "cut":
                for n in f.targets:
                    proxy.cut(n)
            run.windows.append(FaultWindow(f.label, f.kind, start, run.now(), allowance))

        async def faults() -> None:
            for f in c.schedule.faults:
                if f.at_s >= c.duration_s:
                    run.notes.append(f"{f.label} at {f.at_s:g}s: after the run's end, skipped")
                    continue
                await asyncio.sleep(max(0.0, f.at_s - run.now()))
                if stop.is_set():
                    return
                await apply(f)

        print(f"soak: driving the city at {c.orders_per_hour:g} orders/h with {c.drivers} drivers "
              f"for {c.duration_s:g}s; {len(c.schedule.faults)} faults", flush=True)  # fmt: skip
        run.t0 = time.monotonic()
        tokens = Tokens(secret)
        background += [
            asyncio.create_task(_sample_memory(run, children, others, stop)),
            asyncio.create_task(_watchers(run, f"http://127.0.0.1:{proxied['sse']}", tokens, stop)),
        ]
        fault_task = asyncio.create_task(faults())
        sim_task = asyncio.create_task(run_sim(sim, stop=stop, stats=sim_stats))
        done, _ = await asyncio.wait([sim_task, *([runner] if runner else [])],
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if runner in done:
            run.notes.append("the supervisor stopped before the end (a signal?)")
            stop.set()
        await fault_task if fault_task.done() else None
        fault_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fault_task
        stop.set()
        with contextlib.suppress(Exception):
            await sim_task
        proxy.delay("postgres", 0)
        proxy.delay("redis", 0)
        print(f"soak: load over at {run.now():.0f}s; letting the platform settle, then the audit",
              flush=True)  # fmt: skip
        limit = driver_limit({**os.environ, **dispatch_env})
        settings = AuditSettings(stuck_after_s=c.audit.stuck_after_s, grace_s=c.audit.grace_s,
                                 driver_limit=limit)  # fmt: skip
        end = time.monotonic() + c.settle_s
        while True:
            audit = await run_audit(postgres_url=urls.postgres_url, nats_url=urls.nats_url,
                                    acknowledged=list(run.acked), settings=settings)  # fmt: skip
            caught_up = not any(audit.undrained_outboxes.values()) and not any(
                audit.lagging_consumers.values()
            )
            if caught_up or time.monotonic() >= end:
                break
            await asyncio.sleep(5.0)
        if own is not None:
            restarts = {ch.spec.name: ch.restarts for ch in own.children}
        else:  # counted from the run's start: `up` may have restarted some before
            restarts = {n: int(p.get("restarts", 0)) - restarts_before.get(n, 0)
                        for n, p in procs.read().items()}  # fmt: skip
        unexpected = {n: k - run.kills.get(n, 0) for n, k in restarts.items()
                      if k > run.kills.get(n, 0)}  # fmt: skip
    finally:
        stop.set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if supervisor is not None and runner is not None:
            supervisor.request_stop()
            with contextlib.suppress(Exception):
                await runner
        await proxy.stop()
        if not c.keep_infra and target is None:
            await infra.down(state)
            # The servers' data goes with them (the report and the logs stay).
            await asyncio.to_thread(infra.remove_state, state)
        logging.getLogger().removeHandler(own_log)
        own_log.close()
    unhandled = scan_logs(logs)
    memory = memory_growth(run.memory, warmup_s=c.schedule.warmup_s)
    (out / "acknowledged.txt").write_text("\n".join(run.acked) + "\n")
    rows = sorted(run.timeline.calls, key=lambda c: c.t)
    (out / "calls.csv").write_text("t_s,kind,status,ms\n" + "".join(
        f"{c.t:.3f},{c.kind},{c.status},{c.seconds * 1000:.1f}\n" for c in rows))  # fmt: skip
    return SoakResult(
        config=c, timeline=run.timeline, windows=run.windows, audit=audit,
        acknowledged=run.acked, unhandled=unhandled, memory=memory,
        restarts=restarts if "restarts" in locals() else {},
        unexpected_exits=unexpected if "unexpected" in locals() else {}, sim=sim_stats.as_json(),
        elapsed_s=time.monotonic() - started_at, notes=run.notes,
        cpu=cpu_use(run.cpu, tick_s=1.0 / os.sysconf("SC_CLK_TCK")),
    )  # fmt: skip


def _dispatch_env(c: SoakConfig) -> dict[str, str]:
    """Dispatch as ``up``'s city runs it (K orders per driver, offers timed to the kitchen).

    Kitchens faster than life (``prep_scale`` < 1) are not what ETA's prep estimate knows,
    so offers would wait for food long since ready: then every order is offered at once.
    """
    from foodmesh.commands.up import city_dispatch

    env = city_dispatch()
    if c.prep_scale < 1.0:
        env["FOODMESH_DISPATCH_KITCHEN_RELEASE_S"] = ""
    return env
