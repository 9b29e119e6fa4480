"""The development SMTP server: accepts every message and keeps it (``foodmesh infra up``).

``python -m foodmesh.infra.smtp_sink --port P --http-port H --maildir DIR`` listens for
SMTP (aiosmtpd) on P and keeps each message it accepts, as received, in
``DIR/new/<time>-<n>.eml`` (a maildir: written to ``tmp/`` then renamed, so a reader
never sees half a message). On H it answers ``GET /messages?limit=N`` with the newest
messages' headers as JSON (the dashboard's inbox) and ``GET /messages/<name>`` with one
whole message. Nothing is ever relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Maildir", "main", "read_messages"]

_SEQ = itertools.count()


class Maildir:
    """Where the sink keeps messages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def keep(self, data: bytes) -> str:
        name = f"{time.time_ns()}-{os.getpid()}-{next(_SEQ)}.eml"
        tmp = self.root / "tmp" / name
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
        await asyncio.to_thread(self.box.keep, header + content)
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
        return web.json_response({"total": total, "messages": msgs})

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


async def serve(host: str, port: int, http_port: int, root: Path) -> None:
    box = Maildir(root)
    loop = asyncio.get_running_loop()
    handler = _Keep(box)
    smtp = await loop.create_server(
        lambda: SMTP(handler, hostname="foodmesh-smtp-sink", data_size_limit=10 * 1024 * 1024),
        host=host,
        port=port,
    )
    runner = web.AppRunner(_http(root), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtp sink: smtp://{host}:{port} keeping mail in {root}; "
          f"inbox http://{host}:{http_port}/messages", flush=True)  # fmt: skip
    await stop.wait()
    smtp.close()
    await smtp.wait_closed()
    await runner.cleanup()


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
