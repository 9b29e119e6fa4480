"""The mail page: what the development SMTP server kept, for ops to read (``/mail``).

``foodmesh up`` points ``FOODMESH_DASHBOARD_SMTP_INBOX_URL`` at the SMTP server's inbox
listing (``foodmesh.infra.smtp_sink``); ``/api/mail`` relays it, ``/mail`` shows it,
newest first. Without the variable the page says there is no SMTP server to read.
"""

from __future__ import annotations

import html
import json

import aiohttp
from aiohttp import web

__all__ = ["add_mail_routes"]

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>foodmesh mail</title>
<link rel="stylesheet" href="/static/style.css"></head><body style="padding:1em">
<h1>Mail kept by the development SMTP server</h1><p id="total"></p><table id="mail">
<thead><tr><th>kept</th><th>to</th><th>subject</th><th>text</th></tr></thead><tbody></tbody>
</table><script>
async function load() {
  const r = await fetch('/api/mail?limit=100');
  const body = await r.json();
  document.getElementById('total').textContent = body.error ? body.error :
    `${body.total} messages (${body.duplicates} resends recognised by Message-ID)`;
  const rows = (body.messages || []).map(m => {
    const tr = document.createElement('tr');
    const when = new Date(Number(m.date) / 1e6).toLocaleTimeString();
    for (const v of [when, m.to, m.subject, m.text]) {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  });
  document.querySelector('#mail tbody').replaceChildren(...rows);
}
load(); setInterval(load, 3000);
</script></body></html>"""


def add_mail_routes(app: web.Application, inbox_url: str) -> None:
    """``/mail`` and ``/api/mail`` (behind the app's ops check, like every other page)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html")

    async def listing(request: web.Request) -> web.Response:
        if not inbox_url:
            return web.json_response(
                {"error": "no development SMTP server (FOODMESH_DASHBOARD_SMTP_INBOX_URL)"},
                status=404,
            )
        limit = request.query.get("limit", "50")
        if not limit.isdigit():
            return web.json_response({"error": "limit: must be a number"}, status=400)
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.get(inbox_url, params={"limit": limit}) as r,
            ):
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            return web.json_response(
                {"error": f"the SMTP server's inbox does not answer: {html.escape(str(exc))}"},
                status=502,
            )
        return web.json_response(body)

    app.router.add_get("/mail", page)
    app.router.add_get("/api/mail", listing)
