"""Event → email accepted by the SMTP server, and event → Web Push received, at 200 events/s;
then 10,000 events with the service killed (SIGKILL) twice: duplicates and losses.

Servers: PostgreSQL and NATS (started by the benchmark, or ``FOODMESH_*_URL``); the
development SMTP server (``foodmesh.infra.smtp_sink``, its own process, keeping every
message in a maildir); a local Web Push endpoint in this process that checks VAPID and
decrypts every push (``foodmesh.infra.push_sink``); the Notification service as
``foodmesh serve notification`` in a process of its own, with production defaults.

Load: ``--customers`` (200) customers, each with an email address and a push
subscription; ``orders.v1.confirmed`` events, each for one customer, published to
JetStream on schedule (open loop) at ``--rate`` (200) a second. An event's latency is
from its intended publish time to the SMTP server's keeping of its mail (the maildir
file's time) and to the push endpoint's receipt of its decrypted push.

Phases: **latency** (``--duration`` s, 20; no faults); **chaos** (``--events``, 10,000,
at the same rate, the service SIGKILLed at a third and two thirds of the run and
started again at once): every event must reach its mailbox and its browser once
(``lost``: never arrived; ``duplicates``: kept or received twice). Resends of sends that
were under way at a kill carry the same Message-ID / notification id: the SMTP server
keeps one per Message-ID and counts the others (``resent``); the push endpoint records
every receipt (``push_duplicates_received``, raw: a push whose outcome was not yet
committed at the kill reaches the endpoint again), and what the browser ends up showing
with the service worker's ``tag`` = notification id (``push_duplicates_shown``: a
notification shown twice; ``push_collapsed_by_tag``: resends that replaced the one
shown). Every push must carry its RFC 8030 ``Topic`` (``push_without_topic``).

Baseline: the same events at the same rate to a bare consumer in this process that sends
each one's mail (aiosmtplib, one kept connection) and push (the same encryption and
VAPID) straight from the event: no record, no idempotency, no retries. The ratio says
what sending exactly once from a durable record costs in latency.

    python benchmarks/notification.py              # ~2.5 min
    python benchmarks/notification.py --quick --json
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    bench_infra,
    emit_json,
    env_url,
    fresh_database,
    machine,
    now_iso,
    parser,
    print_table,
    ratio,
)
from clients import ClientOptions, NotificationClient  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.core.events import DISPATCH, ORDER_EVENTS, ORDERS  # noqa: E402
from foodmesh.core.nats import Subjects, open_nats  # noqa: E402
from foodmesh.infra._procs import free_port  # noqa: E402
from foodmesh.infra.push_sink import PushSink  # noqa: E402
from foodmesh.infra.smtp_sink import Maildir  # noqa: E402
from foodmesh.v1 import common_pb2, order_pb2  # noqa: E402
from foodmesh.v1 import notification_pb2 as pb  # noqa: E402
from servers import notification  # noqa: E402
from servers.notification.rules import notification_id  # noqa: E402
from servers.runtime.migrate import load_migrations, migrate  # noqa: E402

NAMESPACE = "benchnotify"


def _opts(role: str, subject: str) -> ClientOptions:
    return ClientOptions(
        metadata=bearer(mint_token(DEV_SECRET, subject=subject, role=role)), deadline_s=10.0
    )


def _event(i: int, customers: int, tag: str) -> order_pb2.OrderEvent:
    order_id = f"{tag}-{i}"
    return order_pb2.OrderEvent(
        event_id=f"{order_id}:confirmed",
        order=order_pb2.Order(
            order_id=order_id, customer_id=f"c{i % customers}", restaurant_id="r1",
            restaurant_name="Luigi's", status=common_pb2.ORDER_STATUS_CONFIRMED,
        ),
    )  # fmt: skip


class Mesh:
    """The servers of the run and the service's process, to kill and start again."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.port = int(env["FOODMESH_NOTIFICATION_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "notification.log"
        #: cProfile each start of the service into ``<path>.<n>``; kills are then SIGTERM
        #: (a SIGKILLed process writes no profile), so the chaos figures do not count.
        self.profile = os.environ.get("FOODMESH_BENCH_PROFILE", "")
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.starts += 1
            out_path = f"{self.profile}.{self.starts}"
            prefix = ["-m", "cProfile", "-o", out_path] if self.profile else []
            self.proc = subprocess.Popen(
                [sys.executable, *prefix, "-m", "foodmesh", "serve", "notification"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM if self.profile else signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _ready(client: NotificationClient, mesh: Mesh, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            r = await client.get_push_config(pb.GetPushConfigRequest(), deadline_s=1.0)
            if r.vapid_public_key:
                return
        except Exception:
            pass
        if mesh.proc is not None and mesh.proc.poll() is not None:
            raise RuntimeError(f"the service exited: {mesh.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start: {mesh.log.read_text()[-2000:]}")
        await asyncio.sleep(0.2)


def _mail_times(box: Maildir, start_ns: int) -> dict[str, list[float]]:
    """notification id -> the times its mails were kept (from the maildir's file names)."""
    out: dict[str, list[float]] = {}
    new = box.root / "new"
    for entry in os.scandir(new):
        t_ns = int(entry.name.split("-", 1)[0])
        if t_ns < start_ns:
            continue
        with open(entry.path, "rb") as f:
            head = f.read(4096)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-foodmesh-notification:"):
                nid = line.split(b":", 1)[1].strip().decode()
                out.setdefault(nid, []).append(t_ns / 1e9)
                break
    return out


async def _publish(
    js: Any, subjects: Subjects, events: list[order_pb2.OrderEvent], rate: float,
    sent: dict[str, float], progress: Progress | None = None,
    at: dict[int, Any] | None = None,
) -> None:  # fmt: skip
    """Publishes on schedule (event i at t0 + i/rate); ``at`` runs hooks at given indices."""
    subject = subjects.subject(ORDER_EVENTS.subject("confirmed"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wall0 = time.time()
    pending: set[asyncio.Task[Any]] = set()
    for i, ev in enumerate(events):
        intended = t0 + i / rate
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if at and i in at:
            at[i]()
        sent[ev.event_id] = wall0 + i / rate
        t = asyncio.create_task(js.publish(subject, ev.SerializeToString(),
                                           headers={"Nats-Msg-Id": ev.event_id}))  # fmt: skip
        pending.add(t)
        t.add_done_callback(pending.discard)
        if progress:
            progress.add()
    if pending:
        await asyncio.gather(*pending)


async def _attempts(pg: str) -> dict[str, float]:
    """Mean send attempts per delivery, by channel (1.0: nothing was retried); the reasons
    of retried ones go to stderr."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(pg) as conn:
        cur = await conn.execute(
            "SELECT channel, avg(attempts)::float8 FROM notify.deliveries"
            " WHERE channel IN ('email', 'push') GROUP BY 1"
        )
        out = {str(r[0]): round(float(r[1]), 3) for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT channel, left(reason, 120), count(*) FROM notify.deliveries"
            " WHERE reason <> '' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"
        )
        for r in await cur.fetchall():
            print(f"  retried or failed: {r[0]} x{r[2]}: {r[1]}", file=sys.stderr)
    return out


def _latencies(
    sent: dict[str, float], recipient_of: dict[str, str], arrivals: dict[str, list[float]]
) -> tuple[LatencyResult, int, int]:
    """(first-arrival latencies, lost, duplicates) of the events in ``sent``."""
    lat: list[float] = []
    lost = dups = 0
    for eid, t in sent.items():
        got = arrivals.get(notification_id(eid, recipient_of[eid]))
        if not got:
            lost += 1
            continue
        lat.append(max(0.0, min(got) - t))
        dups += len(got) - 1
    seconds = max(sent.values()) - min(sent.values()) if sent else 0.0
    return LatencyResult.of(np.asarray(lat), errors=lost, seconds=seconds or 1.0), lost, dups


def _spawn_sink(tmp: Path, port: int, http: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "foodmesh.infra.smtp_sink", "--port", str(port),
         "--http-port", str(http), "--maildir", str(tmp / "maildir")],
        stdout=subprocess.DEVNULL, stderr=(tmp / "smtp.log").open("ab"),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _smtp_server(tmp: Path) -> AsyncIterator[tuple[int, Maildir]]:
    port, http = free_port(), free_port()
    root = tmp / "maildir"
    proc = _spawn_sink(tmp, port, http)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.05)
        yield port, Maildir(root)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _baseline(
    js: Any, subjects: Subjects, smtp_port: int, box: Maildir, push: PushSink,
    subs: dict[str, dict[str, str]], customers: int, rate: float, n: int,
) -> dict[str, Any]:  # fmt: skip
    """A bare consumer sending each event's mail and push straight away."""
    import aiosmtplib

    from servers.notification.channels import (
        EmailChannel,
        PushChannel,
        SmtpConfig,
        new_vapid_key,
    )
    from servers.notification.store import Claimed

    email = EmailChannel(SmtpConfig.from_url(f"smtp://127.0.0.1:{smtp_port}"), connections=1)
    pusher = PushChannel(new_vapid_key())
    nc = js._nc
    received_push_before = len(push.received)
    start_ns = time.time_ns()
    sent: dict[str, float] = {}
    recipient_of: dict[str, str] = {}
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Any) -> None:
        nonlocal count
        ev = order_pb2.OrderEvent.FromString(msg.data)
        rcpt = f"customer:{ev.order.customer_id}"
        nid = notification_id(ev.event_id, rcpt)
        base = {"to": f"{ev.order.customer_id}@example.com", "subject": "Confirmed",
                "text": "Your order is confirmed.", "html": ""}  # fmt: skip
        sub = subs[ev.order.customer_id]
        await asyncio.gather(
            email.send(Claimed(f"raw-{nid}", nid, rcpt, "email", base["to"], base, 1, False)),
            pusher.send(Claimed(f"rawp-{nid}", nid, rcpt, "push", sub["endpoint"], {
                "notification_id": nid, "title": "Confirmed", "p256dh": sub["p256dh"],
                "auth": sub["auth"]}, 1, False)),
        )  # fmt: skip
        count += 1
        if count >= n:
            done.set()

    sub = await nc.subscribe(subjects.subject(ORDER_EVENTS.subject("baseline")), cb=on_msg)
    events = [_event(i, customers, "raw") for i in range(n)]
    for ev in events:
        recipient_of[ev.event_id] = f"customer:{ev.order.customer_id}"
    subject = subjects.subject(ORDER_EVENTS.subject("baseline"))
    loop = asyncio.get_running_loop()
    t0, wall0 = loop.time(), time.time()
    for i, ev in enumerate(events):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[ev.event_id] = wall0 + i / rate
        await nc.publish(subject, ev.SerializeToString())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await done.wait()
    await sub.unsubscribe()
    await email.close()
    await pusher.close()
    _ = aiosmtplib
    mails = _mail_times(box, start_ns)
    pushes: dict[str, list[float]] = {}
    for r in push.received[received_push_before:]:
        pushes.setdefault(r.payload["notification_id"], []).append(r.at)
    m, _, _ = _latencies(sent, recipient_of, mails)
    p, _, _ = _latencies(sent, recipient_of, pushes)
    return {"email": m, "push": p}


async def run(args: Any) -> dict[str, Any]:
    rate = args.rate or 200.0
    duration = args.duration or (5.0 if args.quick else 20.0)
    n_chaos = args.events or (1000 if args.quick else 10_000)
    customers = args.customers
    given = {k: env_url(f"FOODMESH_{k.upper()}_URL") for k in ("postgres", "redis", "nats")}
    async with contextlib.AsyncExitStack() as stack:
        if all(given.values()):
            pg_admin, redis_url, nats_url = given["postgres"], given["redis"], given["nats"]
        else:
            urls = await stack.enter_async_context(bench_infra("notification"))
            pg_admin, redis_url, nats_url = urls.postgres_url, urls.redis_url, urls.nats_url
        assert pg_admin and redis_url and nats_url
        pg = await fresh_database(pg_admin, "notification")
        spec = notification.SPEC
        assert spec.migrations is not None
        await migrate(pg, service=spec.name, migrations=load_migrations(spec.migrations))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-notify-")))
        smtp_port, box = await stack.enter_async_context(_smtp_server(tmp))
        push = await PushSink().start()
        stack.push_async_callback(push.close)
        nc = await open_nats(nats_url, name="bench")
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        subjects = Subjects(NAMESPACE)
        for stream in (ORDERS, DISPATCH):
            with contextlib.suppress(Exception):
                await js.delete_stream(subjects.stream(stream.name))
            await js.add_stream(stream.config(subjects))
        port = free_port()
        env = {
            **os.environ, "FOODMESH_DEV": "1", "FOODMESH_POSTGRES_URL": pg,
            "FOODMESH_REDIS_URL": redis_url, "FOODMESH_NATS_URL": nats_url,
            "FOODMESH_NAMESPACE": NAMESPACE, "FOODMESH_NOTIFICATION_PORT": str(port),
            "FOODMESH_METRICS": "0", "FOODMESH_LOG_LEVEL": "WARNING",
            "FOODMESH_NOTIFICATION_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "FOODMESH_NOTIFICATION_SMS_SINK": str(tmp / "sms.jsonl"),
            # a killed process's claims and unacknowledged events come back within seconds
            "FOODMESH_NOTIFICATION_LEASE_S": "3", "FOODMESH_NOTIFICATION_ACK_WAIT_S": "3",
            "FOODMESH_NOTIFICATION_ORDER_TARGET": "127.0.0.1:9",
            "FOODMESH_NOTIFICATION_DISPATCH_TARGET": "127.0.0.1:9",
        }  # fmt: skip
        mesh = Mesh(tmp, env)
        mesh.start()
        stack.callback(mesh.stop)
        ops = NotificationClient(f"127.0.0.1:{port}", options=_opts("ops", "bench"))
        await _ready(ops, mesh)

        progress = Progress("recipients", total=customers)
        subs: dict[str, dict[str, str]] = {}
        for c in range(customers):
            sub = push.subscription()
            subs[f"c{c}"] = sub
            rcpt = f"customer:c{c}"
            await ops.register_push_subscription(
                pb.RegisterPushSubscriptionRequest(recipient=rcpt, **sub)
            )
            await ops.set_preferences(pb.SetPreferencesRequest(recipient=rcpt,
                preferences=pb.Preferences(email=f"c{c}@example.com")))  # fmt: skip
            progress.add()
        progress.finish()

        def cpu_s() -> float:
            assert mesh.proc is not None
            fields = Path(f"/proc/{mesh.proc.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        async def phase(tag: str, n: int, kills: tuple[int, ...]) -> dict[str, Any]:
            start_ns = time.time_ns()
            cpu0 = cpu_s()
            pushes_before = len(push.received)
            collapsed_before = push.collapsed
            resent_before = box.duplicates()
            events = [_event(i, customers, tag) for i in range(n)]
            recipient_of = {e.event_id: f"customer:{e.order.customer_id}" for e in events}
            sent: dict[str, float] = {}
            restarts: list[asyncio.Task[None]] = []

            def kill_and_restart() -> None:
                mesh.kill()
                mesh.start()

            hooks = {k: kill_and_restart for k in kills}
            progress = Progress(f"{tag}: events", total=n)
            await _publish(js, subjects, events, rate, sent, progress, hooks)
            progress.finish()
            # Until all arrived: a loaded machine drains slower than the events come.
            deadline = time.monotonic() + 60 + n / 20
            while time.monotonic() < deadline:  # until everything arrived, or the deadline
                got_push = {r.payload["notification_id"] for r in push.received[pushes_before:]}
                if len(got_push) >= n and sum(1 for _ in os.scandir(box.root / "new")) >= n:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # a resend, if any, would arrive meanwhile
            _ = restarts
            mails = _mail_times(box, start_ns)
            pushes: dict[str, list[float]] = {}
            for r in push.received[pushes_before:]:
                pushes.setdefault(r.payload["notification_id"], []).append(r.at)
            em, em_lost, em_dups = _latencies(sent, recipient_of, mails)
            pu, pu_lost, pu_dups = _latencies(sent, recipient_of, pushes)
            shown = push.shown_per_tag()
            shown_dups = sum(max(0, shown.get(nid, 0) - 1) for nid in pushes)
            no_topic = sum(1 for r in push.received[pushes_before:]
                           if r.topic != r.payload.get("notification_id"))  # fmt: skip
            cpu = (cpu_s() - cpu0) if not kills else None

            def drained(arrivals: dict[str, list[float]]) -> float | None:
                """Events delivered per second, from the first publish to the last arrival
                (the offered rate when the service keeps up)."""
                firsts = [min(a) for a in arrivals.values() if a]
                span = max(firsts, default=0.0) - min(sent.values(), default=0.0)
                return round(len(firsts) / span, 1) if firsts and span > 0 else None

            return {
                "events": n, "kills": len(kills), "email": em, "push": pu,
                "service_cpu_ms_per_event": round(cpu * 1000 / n, 2) if cpu else None,
                "email_drained_per_s": drained(mails), "push_drained_per_s": drained(pushes),
                "email_lost": em_lost, "email_duplicates": em_dups,
                "email_resent_same_id": box.duplicates() - resent_before,
                "push_lost": pu_lost, "push_duplicates_received": pu_dups,
                "push_duplicates_shown": shown_dups,
                "push_collapsed_by_tag": push.collapsed - collapsed_before,
                "push_without_topic": no_topic,
            }  # fmt: skip

        lat = await phase("lat", int(rate * duration), ())
        chaos = await phase("chaos", n_chaos, (n_chaos // 3, 2 * n_chaos // 3))
        dead = (await ops.list_dead_letters(pb.ListDeadLettersRequest())).dead_letter_count
        attempts = await _attempts(pg)
        raw = await _baseline(js, subjects, smtp_port, box, push, subs, customers, rate,
                              int(rate * duration))  # fmt: skip
        await ops.close()

    def fig(r: LatencyResult) -> dict[str, Any]:
        return r.as_dict()

    ours = {
        "email": fig(lat["email"]), "push": fig(lat["push"]),
        "service_cpu_ms_per_event": lat["service_cpu_ms_per_event"],
        "email_drained_per_s": lat["email_drained_per_s"],
        "push_drained_per_s": lat["push_drained_per_s"],
        "chaos": {
            "events": chaos["events"], "kills": chaos["kills"],
            "email_lost": chaos["email_lost"], "email_duplicates": chaos["email_duplicates"],
            "email_resent_same_id": chaos["email_resent_same_id"],
            "push_lost": chaos["push_lost"],
            "push_duplicates_received": chaos["push_duplicates_received"],
            "push_duplicates_shown": chaos["push_duplicates_shown"],
            "push_collapsed_by_tag": chaos["push_collapsed_by_tag"],
            "push_without_topic": chaos["push_without_topic"],
            "email_p95_ms": round(float(np.percentile(chaos["email"].samples_s, 95)) * 1000, 1)
            if chaos["email"].ok else None,
            "push_p95_ms": round(float(np.percentile(chaos["push"].samples_s, 95)) * 1000, 1)
            if chaos["push"].ok else None,
            "dead_letters": dead,
        },
        "attempts_per_delivery": attempts,
    }  # fmt: skip
    for key in ("email", "push"):
        ours[key]["p95_ms"] = round(float(np.percentile(lat[key].samples_s, 95)) * 1000, 1)
        raw[key] = {**raw[key].as_dict(),
                    "p95_ms": round(float(np.percentile(raw[key].samples_s, 95)) * 1000, 1)
                    if raw[key].ok else None}  # fmt: skip
    return {
        "benchmark": "notification",
        "date": now_iso(),
        "machine": machine(),
        "config": {
            "rate": rate,
            "duration_s": duration,
            "chaos_events": n_chaos,
            "customers": customers,
        },  # fmt: skip
        "baseline": raw,
        "ours": ours,
        "ratio": {
            "email_p95": ratio(ours["email"]["p95_ms"], raw["email"]["p95_ms"]),
            "push_p95": ratio(ours["push"]["p95_ms"], raw["push"]["p95_ms"]),
        },
    }


def main() -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--events", type=int, help="events of the chaos phase (10,000)")
    p.add_argument("--customers", type=int, default=200, help="recipients (200)")
    args = p.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        emit_json(result)
        return 0
    o, b, c = result["ours"], result["baseline"], result["ours"]["chaos"]
    print(
        f"service CPU per event (mail + push + inbox): {o['service_cpu_ms_per_event']} ms; "
        f"drained {o['email_drained_per_s']} mails/s, {o['push_drained_per_s']} pushes/s; "
        f"attempts per delivery: {o['attempts_per_delivery']}"
    )
    print_table(
        f"event → delivered at {result['config']['rate']:g} events/s (ms; target p95 < 1000)",
        ["path", "p50", "p95", "p99", "max", "arrived", "ours/raw p95"],
        [
            ["email (ours)", o["email"]["p50_ms"], o["email"]["p95_ms"], o["email"]["p99_ms"],
             o["email"]["max_ms"], o["email"]["ok"], result["ratio"]["email_p95"]],
            ["email (raw)", b["email"]["p50_ms"], b["email"]["p95_ms"], b["email"]["p99_ms"],
             b["email"]["max_ms"], b["email"]["ok"], None],
            ["push (ours)", o["push"]["p50_ms"], o["push"]["p95_ms"], o["push"]["p99_ms"],
             o["push"]["max_ms"], o["push"]["ok"], result["ratio"]["push_p95"]],
            ["push (raw)", b["push"]["p50_ms"], b["push"]["p95_ms"], b["push"]["p99_ms"],
             b["push"]["max_ms"], b["push"]["ok"], None],
        ],
    )  # fmt: skip
    print_table(
        f"{c['events']:,} events, service SIGKILLed {c['kills']} times (target: 0 and 0)",
        ["channel", "lost", "duplicates kept/shown", "resent (same id)", "p95 ms"],
        [["email", c["email_lost"], c["email_duplicates"], c["email_resent_same_id"],
          c["email_p95_ms"]],
         ["push", c["push_lost"], c["push_duplicates_shown"], c["push_duplicates_received"],
          c["push_p95_ms"]]],
    )  # fmt: skip
    print(
        f"push: {c['push_duplicates_received']} raw receipts twice (resends in doubt at a "
        f"kill), {c['push_collapsed_by_tag']} collapsed by tag, {c['push_without_topic']} "
        "without Topic"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
