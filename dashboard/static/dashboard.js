// foodmesh ops dashboard: draws our own road graph, the live picture from /api/stream.
"use strict";

const COLORS = {
  available: "#34d399", offered: "#fbbf24", on_delivery: "#60a5fa", offline: "#6b7280",
  unspecified: "#9ca3af",
};
const ROAD_STYLE = { // road class -> [width px at zoom 1, colour]
  0: [2.4, "#8b95a5"], 1: [1.8, "#6b7585"], 2: [1.2, "#4f5866"], 3: [0.8, "#3a424d"],
  4: [0.7, "#343b45"], 5: [0.7, "#343b45"],
};

const canvas = document.getElementById("map");
const ctx = canvas.getContext("2d");
const view = { scale: 1, dx: 0, dy: 0 }; // screen = base * scale + d
let map = null;          // /api/map
let roadsLayer = null;   // offscreen canvas of the roads at the current view
let picture = null;      // last /api/stream picture
let selected = null;     // {kind: "order"|"driver", id}
let selectedPath = [];
const history = { fixes: [], matching: [] };

function project(lat, lon) {
  // equirectangular around the map's centre; y grows downwards
  const b = map.bounds;
  const k = Math.cos(((b[0] + b[2]) / 2) * Math.PI / 180);
  const w = canvas.width, h = canvas.height;
  const sx = w / ((b[3] - b[1]) * k), sy = h / (b[2] - b[0]);
  const s = Math.min(sx, sy) * 0.96;
  const cx = (b[1] + b[3]) / 2, cy = (b[0] + b[2]) / 2;
  const x = w / 2 + (lon - cx) * k * s, y = h / 2 - (lat - cy) * s;
  return [x * view.scale + view.dx, y * view.scale + view.dy];
}

function resize() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(200, r.width * devicePixelRatio);
  canvas.height = Math.max(200, r.height * devicePixelRatio);
  roadsLayer = null;
  draw();
}

function drawRoads() {
  const off = document.createElement("canvas");
  off.width = canvas.width; off.height = canvas.height;
  const g = off.getContext("2d");
  g.fillStyle = "#111418"; g.fillRect(0, 0, off.width, off.height);
  const [lat0, lon0] = map.origin;
  const classes = Object.keys(map.roads).sort((a, b) => b - a); // minor streets first
  for (const c of classes) {
    const [w, colour] = ROAD_STYLE[c] || [0.6, "#2b313a"];
    g.strokeStyle = colour;
    g.lineWidth = Math.max(0.5, w * Math.sqrt(view.scale)) * devicePixelRatio;
    g.beginPath();
    const a = map.roads[c];
    for (let i = 0; i < a.length; i += 4) {
      const [x1, y1] = project(lat0 + a[i] / 1e5, lon0 + a[i + 1] / 1e5);
      const [x2, y2] = project(lat0 + a[i + 2] / 1e5, lon0 + a[i + 3] / 1e5);
      g.moveTo(x1, y1); g.lineTo(x2, y2);
    }
    g.stroke();
  }
  roadsLayer = off;
}

function draw() {
  if (!map) return;
  if (!roadsLayer) drawRoads();
  ctx.drawImage(roadsLayer, 0, 0);
  const px = devicePixelRatio;
  if (picture && document.getElementById("show-surge").checked) {
    for (const [cell, lat, lon, mult] of picture.surge || []) {
      if (mult <= 1.0) continue;
      const [x, y] = project(lat, lon);
      const r = 60 * view.scale * px;
      const grad = ctx.createRadialGradient(x, y, 0, x, y, r);
      const alpha = Math.min(0.55, (mult - 1) / 2 * 0.55 + 0.1);
      grad.addColorStop(0, `rgba(248,113,113,${alpha})`);
      grad.addColorStop(1, "rgba(248,113,113,0)");
      ctx.fillStyle = grad; ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
      ctx.fillStyle = "#fca5a5"; ctx.font = `${11 * px}px system-ui`;
      ctx.fillText(`${mult.toFixed(1)}×`, x - 10 * px, y);
    }
  }
  ctx.fillStyle = "#f472b6";
  for (const r of map.restaurants || []) {
    const [x, y] = project(r[2], r[3]);
    ctx.fillRect(x - 2 * px, y - 2 * px, 4 * px, 4 * px);
  }
  if (!picture) return;
  ctx.lineWidth = 1.2 * px;
  for (const o of picture.orders) {
    const [x1, y1] = project(o[2], o[3]);
    const [x2, y2] = project(o[4], o[5]);
    const isSel = selected && selected.kind === "order" && selected.id === o[0];
    ctx.strokeStyle = o[7] ? "#f87171" : (isSel ? "#fde68a" : "rgba(167,139,250,0.7)");
    ctx.lineWidth = (isSel ? 3 : 1.2) * px;
    ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
    ctx.fillStyle = "#a78bfa";
    ctx.beginPath(); ctx.arc(x2, y2, 2.5 * px, 0, 2 * Math.PI); ctx.fill();
  }
  if (selectedPath.length > 1) {
    ctx.strokeStyle = "#fde68a"; ctx.lineWidth = 2 * px; ctx.beginPath();
    selectedPath.forEach((p, i) => {
      const [x, y] = project(p[1], p[2]);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  for (const d of picture.drivers) {
    const [x, y] = project(d[1], d[2]);
    ctx.fillStyle = COLORS[d[3]] || COLORS.unspecified;
    ctx.beginPath(); ctx.arc(x, y, 3.5 * px, 0, 2 * Math.PI); ctx.fill();
    if (selected && selected.kind === "driver" && selected.id === d[0]) {
      ctx.strokeStyle = "#fde68a"; ctx.lineWidth = 2 * px;
      ctx.beginPath(); ctx.arc(x, y, 7 * px, 0, 2 * Math.PI); ctx.stroke();
    }
  }
}

function sparkline(id, values, colour) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const vals = values.filter((v) => v !== null && v !== undefined);
  if (!vals.length) return;
  const max = Math.max(1, ...vals);
  g.strokeStyle = colour; g.fillStyle = colour; g.lineWidth = 1.5;
  const n = values.length, w = c.width / Math.max(1, n - 1);
  g.beginPath();
  values.forEach((v, i) => {
    const y = c.height - 4 - ((v || 0) / max) * (c.height - 12);
    if (i === 0) g.moveTo(0, y); else g.lineTo(i * w, y);
  });
  g.stroke();
  g.font = "10px system-ui"; g.fillText(String(vals[vals.length - 1]), c.width - 34, 11);
}

function bars(id, values, colour) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...values), w = c.width / values.length;
  g.fillStyle = colour;
  values.forEach((v, i) => {
    const h = (v / max) * (c.height - 14);
    g.fillRect(i * w + 2, c.height - h, w - 4, h);
  });
  g.font = "10px system-ui"; g.fillText(`max ${max}`, c.width - 44, 11);
}

const FIGURES = [
  ["orders_last_min", "orders / min"], ["in_flight", "in flight"],
  ["delivered_window", "delivered (10 min)"], ["drivers_online", "drivers online"],
  ["matching_p50_s", "matching p50 s"], ["matching_p95_s", "matching p95 s"],
  ["offers_per_order", "offers / order"], ["eta_error_mean_min", "ETA error, min"],
  ["eta_error_p90_min", "ETA error p90, min"],
  ["eta_error_assigned_mean_min", "ETA error at assignment"],
  ["eta_error_pickup_mean_min", "ETA error at pickup"],
  ["fixes_per_s", "fixes / s"], ["unassigned", "unassigned"], ["escalated", "escalated"],
  ["auto_confirmed", "auto-confirmed (10 min)"], ["confirm_timeouts", "not confirmed (10 min)"],
  ["no_driver", "no driver"], ["driver_lost", "driver lost"],
];

function render(p) {
  picture = p;
  document.getElementById("clock").textContent =
    new Date(p.t * 1000).toLocaleTimeString() + ` · ${p.drivers.length} drivers`;
  const f = p.figures;
  document.getElementById("figures").innerHTML = FIGURES.map(([k, label]) =>
    `<div class="fig" data-figure="${k}"><b>${f[k] ?? "–"}</b><span>${label}</span></div>`
  ).join("");
  history.fixes.push(f.fixes_per_s); history.matching.push(f.matching_p95_s);
  for (const k of Object.keys(history)) if (history[k].length > 120) history[k].shift();
  bars("chart-orders", f.orders_per_min, "#a78bfa");
  sparkline("chart-fixes", history.fixes, "#34d399");
  sparkline("chart-matching", history.matching, "#fbbf24");
  document.getElementById("health").innerHTML = Object.entries(p.health).map(([name, st]) =>
    `<tr><td>${name}</td><td class="${st}">${st}</td></tr>`).join("");
  renderForecast(p.forecast);
  if (map && (map.restaurants || []).length !== p.restaurant_count) loadMap();
  draw();
}

// Orders per half hour per busy cell: what came (the last 30 min) beside what was forecast
// for it, then the next 30 min (80 % interval) and the 30 after; a sparkline of both.
function renderForecast(fc) {
  const table = document.getElementById("forecast");
  if (!fc || !fc.cells || !fc.cells.length) {
    table.innerHTML = "<tr><td>no forecast yet</td></tr>";
    return;
  }
  document.getElementById("forecast-model").textContent = fc.model ? `· ${fc.model}` : "";
  const head = "<tr><th>cell</th><th>last 30′</th><th>forecast</th><th>next 30′</th>" +
    "<th>next 60′</th><th>risk</th><th></th></tr>";
  table.innerHTML = head + fc.cells.map((c, i) =>
    `<tr data-cell="${esc(c[0])}"><td>${esc(c[0])}</td><td>${c[1]}</td><td>${c[2] ?? "–"}</td>` +
    `<td>${c[3] ?? "–"} <small>${c[4] ?? ""}–${c[5] ?? ""}</small></td><td>${c[6] ?? "–"}</td>` +
    `<td class="risk-${esc(c[8])}">${esc(c[8])}</td>` +
    `<td><canvas id="fc-${i}" width="60" height="18"></canvas></td></tr>`).join("");
  fc.cells.forEach((c, i) => forecastLine(`fc-${i}`, c[9] || []));
}

function forecastLine(id, pts) {
  const cv = document.getElementById(id);
  if (!cv || pts.length < 2) return;
  const g = cv.getContext("2d");
  const top = Math.max(1, ...pts.map(([a, w]) => Math.max(a, w ?? 0)));
  for (const [k, colour] of [[0, "#a78bfa"], [1, "#fbbf24"]]) { // actual, forecast
    g.strokeStyle = colour; g.beginPath();
    let started = false;
    pts.forEach((p, j) => {
      if (p[k] === null) { started = false; return; }
      const x = (j / (pts.length - 1)) * cv.width, y = cv.height - (p[k] / top) * cv.height;
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
  }
}

async function loadMap() {
  const r = await fetch("/api/map");
  if (r.status === 401) { location.replace("/login"); return; }  // the ops token expired
  map = await r.json();
  roadsLayer = null;
  draw();
}

function nearest(mx, my) {
  if (!picture) return null;
  let best = null, bestD = 12 * devicePixelRatio;
  for (const d of picture.drivers) {
    const [x, y] = project(d[1], d[2]);
    const dist = Math.hypot(x - mx, y - my);
    if (dist < bestD) { bestD = dist; best = { kind: "driver", id: d[0] }; }
  }
  for (const o of picture.orders) {
    const [x1, y1] = project(o[2], o[3]);
    const [x2, y2] = project(o[4], o[5]);
    const vx = x2 - x1, vy = y2 - y1, len2 = vx * vx + vy * vy || 1;
    const t = Math.max(0, Math.min(1, ((mx - x1) * vx + (my - y1) * vy) / len2));
    const dist = Math.hypot(x1 + t * vx - mx, y1 + t * vy - my);
    if (dist < bestD) { bestD = dist; best = { kind: "order", id: o[0] }; }
  }
  return best;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" }[c]));
}

async function showDetails(sel) {
  const box = document.getElementById("details");
  selected = sel; selectedPath = [];
  if (!sel) { box.textContent = "Click an order line or a driver on the map."; draw(); return; }
  if (sel.kind === "order") {
    const r = await fetch(`/api/orders/${encodeURIComponent(sel.id)}`);
    const o = await r.json();
    if (!r.ok) { box.textContent = `${sel.id}: ${o.message || r.status}`; return; }
    const steps = (o.timeline || []).map((e) =>
      `<li>${esc(e.status.replace("ORDER_STATUS_", "").toLowerCase())} · ${esc(e.at || "")}` +
      `${e.actor ? " · " + esc(e.actor) : ""}</li>`).join("");
    box.innerHTML = `<b>${esc(o.order_id)}</b> from ${esc(o.restaurant_name || o.restaurant_id)}` +
      `<br>driver: ${esc(o.driver_id || "none yet")} · offers: ${o.offers_made ?? "?"}` +
      `${o.escalated ? " · <b>escalated</b>" : ""}` +
      (o.alert ? `<br><b>${esc((o.alert.kind || "").replace("ORDER_ALERT_KIND_", "")
        .toLowerCase().replace("_", " "))}</b>: ${esc(o.alert.reason || "")}` +
        (o.alert.last_known_location ? ` · last seen ${esc(o.alert.last_known_location.lat)},` +
          ` ${esc(o.alert.last_known_location.lon)}` : "") : "") +
      `<br>promised: ${esc(o.estimated_delivery_time || "?")}<ol>${steps}</ol>`;
    if (o.driver_id) {
      const pr = await fetch(`/api/drivers/${encodeURIComponent(o.driver_id)}/path`);
      if (pr.ok) selectedPath = (await pr.json()).points;
    }
  } else {
    const r = await fetch(`/api/drivers/${encodeURIComponent(sel.id)}/path`);
    const body = await r.json();
    selectedPath = body.points || [];
    const d = (picture.drivers || []).find((x) => x[0] === sel.id);
    box.innerHTML = `<b>${esc(sel.id)}</b> · ${esc(d ? d[3] : "?")}` +
      `${d && d[4] ? " · carrying " + esc(d[4]) : ""}<br>${selectedPath.length} recent fixes`;
  }
  draw();
}

let drag = null;
canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
window.addEventListener("mouseup", (e) => {
  if (drag && !drag.moved) {
    const r = canvas.getBoundingClientRect();
    showDetails(nearest((e.clientX - r.left) * devicePixelRatio,
                        (e.clientY - r.top) * devicePixelRatio));
  }
  drag = null;
});
window.addEventListener("mousemove", (e) => {
  if (!drag) return;
  const dx = (e.clientX - drag.x) * devicePixelRatio, dy = (e.clientY - drag.y) * devicePixelRatio;
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
  if (drag.moved) {
    view.dx += dx; view.dy += dy; drag.x = e.clientX; drag.y = e.clientY;
    roadsLayer = null; draw();
  }
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = canvas.getBoundingClientRect();
  const mx = (e.clientX - r.left) * devicePixelRatio, my = (e.clientY - r.top) * devicePixelRatio;
  const k = e.deltaY < 0 ? 1.25 : 0.8;
  view.dx = mx - (mx - view.dx) * k; view.dy = my - (my - view.dy) * k; view.scale *= k;
  roadsLayer = null; draw();
}, { passive: false });
document.getElementById("show-surge").addEventListener("change", draw);
window.addEventListener("resize", resize);

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("picture", (e) => render(JSON.parse(e.data)));
  es.onerror = () => { document.getElementById("clock").textContent = "reconnecting…"; };
}

loadMap().then(() => { resize(); connect(); });
