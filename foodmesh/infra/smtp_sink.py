"""The development SMTP server: accepts every message and keeps it (``foodmesh infra up``).

``python -m foodmesh.infra.smtp_sink --port P --http-port H --maildir DIR`` listens for
SMTP (aiosmtpd) on P and keeps each message it accepts, as received, in
``DIR/new/<time>-<n>.eml`` (a maildir: written to ``tmp/`` then renamed, so a reader
never sees half a message). Like the large mail services it keeps one message per
``Message-ID``: a message sent again with the id of one already kept (a sender that
died between the server's acceptance and its own record of it) is accepted, counted in
``DIR/duplicates.log`` and not kept twice. On H it answers ``GET /messages?limit=N`` with the newest
messages' headers as JSON (the dashboard's inbox) and ``GET /messages/<name>`` with one
whole message. Nothing is ever relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import hashlib
import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Maildir", "Sink", "main", "read_messages", "start"]

_SEQ = itertools.count()


class Maildir:
    """Where the sink keeps messages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def first(self, message_id: str) -> bool:
        """True the first time ``message_id`` is seen (a marker made atomically, kept)."""
        if not message_id:
            return True
        marker = self.root / "ids" / hashlib.sha256(message_id.encode()).hexdigest()[:40]
        marker.parent.mkdir(exist_ok=True)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with (self.root / "duplicates.log").open("a") as f:
                f.write(f"{time.time():.3f} {message_id}\n")
            return False
        return True

    def duplicates(self) -> int:
        try:
            with (self.root / "duplicates.log").open() as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def keep(self, data: bytes, message_id: str = "") -> str | None:
        """Keeps a message (None: one with its Message-ID is kept already)."""
        if not self.first(message_id):
            return None
        name = f"{time.time_ns()}-{os.getpid()}-{next(_SEQ)}.eml"
        tmp = self.root / "tmp" / name
        # Written whole, then renamed: a reader sees all of a message or none of it.
        tmp.write_bytes(data)
        tmp.rename(self.root / "new" / name)
        return name


class _Keep:
    def __init__(self, box: Maildir) -> None:
        self.box = box
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode()
        header = (
            f"X-Foodmesh-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Foodmesh-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        head = email.message_from_bytes(content.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        message_id = str(head.get("Message-ID", "")).strip()
        await asyncio.to_thread(self.box.keep, header + content, message_id)
        self.received += 1
        return "250 Message accepted for delivery"


def read_messages(root: Path, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` messages' headers (and text) in a sink's maildir, newest first."""
    new = root / "new"
    names = sorted((p.name for p in new.glob("*.eml")), reverse=True) if new.is_dir() else []
    out: list[dict[str, Any]] = []
    for name in names[: max(0, limit)]:
        try:
            raw = (new / name).read_bytes()
        except OSError:  # removed meanwhile
            continue
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
        text = body.get_content() if body is not None else ""
        out.append({
            "name": name,
            "message_id": str(msg.get("Message-ID", "")),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "notification": str(msg.get("X-Foodmesh-Notification", "")),
            "date": name.split("-", 1)[0],
            "text": str(text)[:2000],
        })  # fmt: skip
    return out


def _http(root: Path) -> web.Application:
    async def listing(request: web.Request) -> web.Response:
        try:
            limit = min(500, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            return web.json_response({"error": "limit: must be a number"}, status=400)
        total = sum(1 for _ in (root / "new").glob("*.eml"))
        msgs = await asyncio.to_thread(read_messages, root, limit=limit)
        dups = Maildir(root).duplicates()
        return web.json_response({"total": total, "duplicates": dups, "messages": msgs})

    async def one(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = root / "new" / name
        if "/" in name or not name.endswith(".eml") or not path.is_file():
            return web.json_response({"error": "no such message"}, status=404)
        return web.Response(body=path.read_bytes(), content_type="message/rfc822")

    app = web.Application()
    app.router.add_get("/messages", listing)
    app.router.add_get("/messages/{name}", one)
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))  # type: ignore[arg-type, return-value]
    return app


class Sink:
    """A running sink (in this process): its maildir, and how to stop it."""

    def __init__(self, box: Maildir, smtp: asyncio.Server, runner: web.AppRunner | None) -> None:
        self.box = box
        self._smtp = smtp
        self._runner = runner

    @property
    def port(self) -> int:
        return int(self._smtp.sockets[0].getsockname()[1])

    def count(self) -> int:
        """How many messages are kept (cheap: no message is read)."""
        return sum(1 for _ in os.scandir(self.box.root / "new"))

    def messages(self, limit: int = 100_000) -> list[dict[str, Any]]:
        return read_messages(self.box.root, limit=limit)

    async def close(self) -> None:
        self._smtp.close()
        await self._smtp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()


async def start(host: str, port: int, root: Path, *, http_port: int | None = None) -> Sink:
    """Starts a sink in this process (port 0: any free port)."""
    box = Maildir(root)
    loop = asyncio.get_running_loop()
    handler = _Keep(box)
    smtp = await loop.create_server(
        lambda: SMTP(handler, hostname="foodmesh-smtp-sink", data_size_limit=10 * 1024 * 1024),
        host=host,
        port=port,
    )
    runner = None
    if http_port is not None:
        runner = web.AppRunner(_http(root), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, http_port).start()
    return Sink(box, smtp, runner)


async def serve(host: str, port: int, http_port: int, root: Path) -> None:
    sink = await start(host, port, root, http_port=http_port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtp sink: smtp://{host}:{port} keeping mail in {root}; "
          f"inbox http://{host}:{http_port}/messages", flush=True)  # fmt: skip
    await stop.wait()
    await sink.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foodmesh.infra.smtp_sink")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--maildir", type=Path, required=True)
    a = p.parse_args(argv)
    asyncio.run(serve(a.host, a.port, a.http_port, a.maildir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
