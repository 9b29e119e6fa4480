// foodmesh customer page: notifications. The inbox (GET /api/v1/notifications), its live
// feed (server-sent events read with fetch, so the bearer token goes in a header), and
// Web Push through the browser's Push API (a service worker shows what arrives).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = () => $("token").value.trim();
  const auth = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
  let live = null;

  function esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
      '"': "&quot;", "'": "&#39;" }[c]));
  }

  function show(n, top) {
    const li = document.createElement("li");
    li.className = n.read_time ? "read" : "unread";
    li.innerHTML = `<b>${esc(n.title)}</b><br><small>${esc(n.body)}</small>`;
    const list = $("notices");
    if (top) list.prepend(li); else list.append(li);
  }

  function unread(n) { $("unread").textContent = n ? `(${n} new)` : ""; }

  async function inbox() {
    if (!token()) return;
    const r = await fetch("/api/v1/notifications?page_size=20",
      { headers: { Accept: "application/json", ...auth() } });
    if (!r.ok) return;
    const body = await r.json();
    $("notices").replaceChildren();
    for (const n of body.notifications || []) show(n, false);
    unread(body.unread_count || 0);
  }

  async function follow() {
    if (!token() || live) return;
    live = new AbortController();
    try {
      const r = await fetch("/api/v1/notifications/stream",
        { headers: { Accept: "text/event-stream", ...auth() }, signal: live.signal });
      const reader = r.body.getReader();
      const text = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += text.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5)).join("\n");
          if (!data) continue;
          const msg = JSON.parse(data);
          if (msg.notification) show(msg.notification, true);
          unread(msg.unread_count || 0);
        }
      }
    } catch (e) { /* aborted or the stream ended: followed again below */ }
    live = null;
    setTimeout(follow, 3000);
  }

  async function markRead() {
    await fetch("/api/v1/notifications:markRead", { method: "POST",
      headers: { "Content-Type": "application/json", ...auth() }, body: JSON.stringify({ all: true }) });
    await inbox();
  }

  function b64(buf) {
    return btoa(String.fromCharCode(...new Uint8Array(buf)))
      .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  }

  async function enablePush() {
    const say = (t) => { $("push-state").textContent = t; };
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) { say("no Push API here"); return; }
    try {
      const cfg = await (await fetch("/api/v1/notifications/push-config",
        { headers: { Accept: "application/json", ...auth() } })).json();
      const raw = atob(cfg.vapid_public_key.replaceAll("-", "+").replaceAll("_", "/"));
      const key = Uint8Array.from(raw, (c) => c.charCodeAt(0));
      const reg = await navigator.serviceWorker.register("sw.js");
      if (Notification.permission !== "granted" && await Notification.requestPermission() !== "granted") {
        say("notifications not allowed"); return;
      }
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      const r = await fetch("/api/v1/notifications/push-subscriptions", { method: "POST",
        headers: { "Content-Type": "application/json", ...auth() },
        body: JSON.stringify({ endpoint: sub.endpoint, p256dh: b64(sub.getKey("p256dh")),
                               auth: b64(sub.getKey("auth")) }) });
      say(r.ok ? "push on" : `push refused (${r.status})`);
    } catch (e) { say(`push unavailable: ${e.message || e}`); }
  }

  $("mark-read").addEventListener("click", markRead);
  $("enable-push").addEventListener("click", enablePush);
  $("token").addEventListener("change", () => { if (live) live.abort(); inbox(); follow(); });
  inbox(); follow();
})();
