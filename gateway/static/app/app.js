// foodmesh customer page: only the public HTTP API, as a mobile app would use it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { point: [37.7749, -122.4194], results: [], restaurant: null, cart: new Map(),
                order: null, driver: null, route: [] };
const hash = new URLSearchParams(location.hash.slice(1));
$("token").value = hash.get("token") || localStorage.getItem("foodmesh.token") || "";
if (hash.get("lat")) { $("lat").value = hash.get("lat"); $("lon").value = hash.get("lon"); }

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" }[c]));
}
const money = (m) => m ? `$${(Number(m.amount_minor || 0) / 100).toFixed(2)}` : "$0.00";
const statusName = (s) => String(s || "").replace("ORDER_STATUS_", "").toLowerCase().replaceAll("_", " ");

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = $("token").value.trim();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const text = await r.text();
  const body = text ? JSON.parse(text) : {};
  if (!r.ok) {
    const fields = [];
    for (const d of body.details || []) {
      for (const v of d.field_violations || d.fieldViolations || []) {
        fields.push(`${v.field}: ${v.description}`);
      }
    }
    throw new Error(`${r.status} ${body.message || ""}${fields.length ? "\n" + fields.join("\n") : ""}`);
  }
  return body;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

// ------------------------------------------------------------------ map
function project(lat, lon) {
  const c = $("map"), [clat, clon] = state.point;
  const span = 0.09; // degrees of latitude shown
  const k = Math.cos(clat * Math.PI / 180);
  return [c.width / 2 + ((lon - clon) * k / span) * c.height, c.height / 2 - ((lat - clat) / span) * c.height];
}

function unproject(x, y) {
  const c = $("map"), [clat, clon] = state.point, span = 0.09;
  const k = Math.cos(clat * Math.PI / 180);
  return [clat - ((y - c.height / 2) / c.height) * span, clon + ((x - c.width / 2) / c.height) * span / k];
}

function drawMap() {
  const c = $("map"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#dde2e7"; g.lineWidth = 1;
  for (let i = 0; i < c.width; i += 23) { g.beginPath(); g.moveTo(i, 0); g.lineTo(i, c.height); g.stroke(); }
  for (let j = 0; j < c.height; j += 23) { g.beginPath(); g.moveTo(0, j); g.lineTo(c.width, j); g.stroke(); }
  for (const r of state.results) {
    const [x, y] = project(r.location.lat, r.location.lon);
    g.fillStyle = r === state.restaurant ? "#e4572e" : (r.is_open ? "#f59e0b" : "#9ca3af");
    g.fillRect(x - 4, y - 4, 8, 8);
  }
  if (state.route.length > 1) {
    g.strokeStyle = "#2563eb"; g.lineWidth = 2; g.beginPath();
    state.route.forEach(([la, lo], i) => { const [x, y] = project(la, lo); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
  if (state.driver) {
    const [x, y] = project(state.driver[0], state.driver[1]);
    g.fillStyle = "#2563eb"; g.beginPath(); g.arc(x, y, 6, 0, 2 * Math.PI); g.fill();
  }
  const [hx, hy] = project(...state.point);
  g.fillStyle = "#16a34a"; g.beginPath(); g.arc(hx, hy, 6, 0, 2 * Math.PI); g.fill();
}

$("map").addEventListener("click", (e) => {
  const r = e.target.getBoundingClientRect();
  const [lat, lon] = unproject((e.clientX - r.left) * (e.target.width / r.width),
                               (e.clientY - r.top) * (e.target.height / r.height));
  $("lat").value = lat.toFixed(5); $("lon").value = lon.toFixed(5);
  search();
});

// ------------------------------------------------------------------ search & menu
async function search() {
  showError(null);
  localStorage.setItem("foodmesh.token", $("token").value.trim());
  state.point = [Number($("lat").value), Number($("lon").value)];
  try {
    const q = new URLSearchParams({ lat: $("lat").value, lon: $("lon").value, radius: "5",
                                    page_size: "20", sort: "SEARCH_SORT_DISTANCE" });
    const words = $("q").value.trim();
    if (words) q.set("q", words);  // by name, cuisine or dish: best matches first
    const body = await api(`/api/v1/restaurants/search?${q}`);
    state.results = body.restaurants || [];
    $("results").innerHTML = state.results.map((r, i) =>
      `<li data-i="${i}" class="${r.is_open ? "" : "closed"}"><b>${esc(r.name)}</b>
       <small>${esc((r.cuisines || []).join(", "))} · ${Number(r.review_count || 0) > 0 ? `★ ${Number(r.rating).toFixed(1)}` : "new"}
       · ${Number(r.distance_miles).toFixed(1)} mi · ${r.delivery_time_min} min
       · fee ${money(r.delivery_fee)}${r.is_open ? "" : " · closed"}</small>${(r.matched_dishes || []).length
         ? `<small class="dishes">has ${esc(r.matched_dishes.join(", "))}</small>` : ""}</li>`).join("")
      || `<li>No restaurant${words ? ` with “${esc(words)}”` : ""} delivers here.</li>`;
  } catch (e) { showError(e); }
  drawMap();
}

// ------------------------------------------------------------------ autocomplete
const KINDS = { SUGGESTION_KIND_CUISINE: "cuisine", SUGGESTION_KIND_DISH: "dish",
                SUGGESTION_KIND_RESTAURANT: "restaurant" };
let typing = 0;
$("q").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(complete, 120);
});
$("q").addEventListener("keydown", (e) => {
  if (e.key === "Enter") { $("suggestions").hidden = true; search(); }
  if (e.key === "Escape") $("suggestions").hidden = true;
});

async function complete() {
  const words = $("q").value;
  if (!words.trim()) { $("suggestions").hidden = true; return; }
  try {
    const q = new URLSearchParams({ q: words, lat: $("lat").value, lon: $("lon").value, limit: "8" });
    const body = await api(`/api/v1/restaurants/autocomplete?${q}`);
    if ($("q").value !== words) return;  // typed on meanwhile
    const list = body.suggestions || [];
    $("suggestions").innerHTML = list.map((s) =>
      `<li role="option" data-text="${esc(s.text)}">${esc(s.text)}
       <small>${KINDS[s.kind] || ""}${s.kind === "SUGGESTION_KIND_RESTAURANT" ? "" : ` · ${s.restaurant_count}`}</small></li>`).join("");
    $("suggestions").hidden = list.length === 0;
  } catch (e) { $("suggestions").hidden = true; }
}

$("suggestions").addEventListener("click", (e) => {
  const li = e.target.closest("li[data-text]");
  if (!li) return;
  $("q").value = li.dataset.text;
  $("suggestions").hidden = true;
  search();
});

$("results").addEventListener("click", (e) => {
  const li = e.target.closest("li[data-i]");
  if (li) openMenu(state.results[Number(li.dataset.i)]);
});

const stars = (rating, count) => Number(count || 0) > 0
  ? `★ ${Number(rating).toFixed(1)} (${count})` : "not rated yet";

// The restaurant's page: its rating and its food's rating, each on its own.
async function showRatings(restaurantId) {
  try {
    const { restaurant: r } = await api(`/api/v1/restaurants/${encodeURIComponent(restaurantId)}`);
    $("menu-rating").textContent =
      `Restaurant ${stars(r.rating, r.review_count)} · Food ${stars(r.food_rating, r.food_rating_count)}`;
  } catch (e) { $("menu-rating").textContent = ""; }
}

async function openMenu(r) {
  showError(null);
  state.restaurant = r; state.cart.clear(); renderCart(); drawMap();
  showRatings(r.restaurant_id);
  try {
    const body = await api(`/api/v1/restaurants/${encodeURIComponent(r.restaurant_id)}/menu`);
    $("menu-title").textContent = r.name;
    $("menu").innerHTML = (body.menu.categories || []).map((c) =>
      `<h3>${esc(c.name)}</h3>` + (c.items || []).filter((i) => i.available).map((i) =>
        `<div class="item"><span>${esc(i.name)}</span><span>${money(i.price)}
         <button data-item="${esc(i.item_id)}" data-name="${esc(i.name)}"
                 data-price="${i.price.amount_minor}">Add</button></span></div>`).join("")).join("");
    $("menu-box").hidden = false;
  } catch (e) { showError(e); }
}

$("menu").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-item]");
  if (!b) return;
  const line = state.cart.get(b.dataset.item) || { name: b.dataset.name, price: Number(b.dataset.price), qty: 0 };
  line.qty += 1; state.cart.set(b.dataset.item, line); renderCart();
});

function renderCart() {
  let total = 0;
  $("cart-lines").innerHTML = [...state.cart.entries()].map(([, l]) => {
    total += l.price * l.qty;
    return `<li>${l.qty} × ${esc(l.name)} — ${money({ amount_minor: l.price * l.qty })}</li>`;
  }).join("") + (state.cart.size ? `<li><b>Subtotal ${money({ amount_minor: total })}</b></li>` : "");
  $("place").disabled = state.cart.size === 0;
}

// ------------------------------------------------------------------ ordering & tracking
$("place").addEventListener("click", async () => {
  showError(null);
  $("place").disabled = true;
  const key = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now() + Math.random());
  const body = {
    restaurant_id: state.restaurant.restaurant_id,
    items: [...state.cart.entries()].map(([id, l]) => ({ item_id: id, quantity: l.qty })),
    delivery_address: { street: "Pinned on the map", city: "San Francisco", state: "CA",
                        zip: "94103", country: "US", lat: state.point[0], lon: state.point[1] },
    payment_method_id: $("card").value,
    leave_at_door: $("leave-at-door").checked,
  };
  try {
    const placed = await api("/api/v1/orders", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    });
    state.order = placed.order;
    $("menu-box").hidden = true; $("tracking").hidden = false;
    $("order-id").textContent = state.order.order_id;
    showOrder(state.order);
    watch(state.order.order_id);
    track(state.order.order_id);
  } catch (e) { showError(e); $("place").disabled = false; }
});

function showOrder(o) {
  // An alert (no driver yet, driver lost) says so beside the status, in the platform's words.
  const alert = o.alert && o.alert.reason ? ` · ${o.alert.reason}` : "";
  const free = o.free_cancel_after && new Date(o.free_cancel_after) <= new Date()
    ? " · you may cancel free of charge" : "";
  $("status").textContent = statusName(o.status) + alert + free;
  $("status").textContent = statusName(o.status);
  // A delivered order may be rated once: restaurant, food and driver apart.
  $("rate-box").hidden = statusName(o.status) !== "delivered" || state.rated === o.order_id;
  // The proof of delivery: only the customer's own view of the order carries it.
  const done = ["delivered", "cancelled"].includes(statusName(o.status));
  if (o.delivery_pin && !done) $("pin").textContent = o.delivery_pin;
  $("pin-box").hidden = !o.delivery_pin || done;
  if (o.payment_method_name) $("paid").textContent = `Paid with ${o.payment_method_name}`;
  if (o.estimated_delivery_time) {
    $("eta").textContent = `Arriving around ${new Date(o.estimated_delivery_time).toLocaleTimeString()}`;
  }
}

// Reads a server-sent event stream with fetch (EventSource cannot send the bearer token).
async function sse(path, onData) {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      const r = await fetch(path, { headers: headers({ Accept: "text/event-stream" }) });
      if (!r.ok) throw new Error(`${r.status}`);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, cut); buf = buf.slice(cut + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data && !chunk.startsWith("event: error")) {
            if (onData(JSON.parse(data)) === false) return;
          }
        }
      }
    } catch (e) { /* reconnect below */ }
    if (state.order && ["delivered", "cancelled"].includes(statusName(state.order.status))) return;
    await new Promise((res) => setTimeout(res, 1000));
  }
}

function watch(orderId) {
  sse(`/api/v1/orders/${encodeURIComponent(orderId)}/watch`, (msg) => {
    if (msg.order) { state.order = msg.order; showOrder(msg.order); }
    if (msg.change) {
      const li = document.createElement("li");
      const c = msg.change;  // the same status again is news of its own: "driver … assigned"
      li.textContent = [statusName(c.status), c.reason, new Date(c.timestamp).toLocaleTimeString()]
        .filter(Boolean).join(" · ");
      $("timeline").appendChild(li);
    }
    return !(msg.order && ["delivered", "cancelled"].includes(statusName(msg.order.status)));
  });
}

function decodePolyline(s) {
  const out = []; let i = 0, lat = 0, lon = 0;
  while (i < s.length) {
    for (const axis of [0, 1]) {
      let shift = 0, result = 0, b;
      do { b = s.charCodeAt(i++) - 63; result |= (b & 0x1f) << shift; shift += 5; } while (b >= 0x20);
      const d = (result & 1) ? ~(result >> 1) : (result >> 1);
      if (axis === 0) lat += d; else lon += d;
    }
    out.push([lat / 1e5, lon / 1e5]);
  }
  return out;
}

function track(orderId) {
  sse(`/api/v1/orders/${encodeURIComponent(orderId)}/track`, (msg) => {
    const d = msg.driver;
    if (d && d.location) {
      state.driver = [d.location.lat, d.location.lon];
      const rated = Number(d.rating || 0) > 0 ? `★ ${Number(d.rating).toFixed(1)}` : "";
      $("driver").textContent = [d.name || d.driver_id, d.vehicle, rated].filter(Boolean).join(" · ");
    }
    if (msg.eta) $("eta").textContent = `Arriving around ${new Date(msg.eta).toLocaleTimeString()}`;
    if (msg.route_polyline) state.route = decodePolyline(msg.route_polyline);
    drawMap();
    return !["delivered", "cancelled"].includes(String(msg.status || "").toLowerCase());
  });
}

// ------------------------------------------------------------------ payment methods
async function loadMethods() {
  try {
    const body = await api("/api/v1/payment-methods");
    const methods = body.payment_methods || [];
    $("methods").innerHTML = methods.map((m) =>
      `<li data-pm="${esc(m.payment_method_id)}"><span>${esc(m.display_name)}${m.is_default ? " <b>(default)</b>" : ""}</span>
       ${m.is_default ? "" : `<button data-default="${esc(m.payment_method_id)}">Make default</button>`}
       <button data-remove="${esc(m.payment_method_id)}">Remove</button></li>`).join("")
      || "<li>No saved payment methods.</li>";
    // Saved methods first in the checkout's list, the default chosen.
    $("saved-cards").innerHTML = methods.map((m) =>
      `<option value="${esc(m.payment_method_id)}"${m.is_default ? " selected" : ""}>${esc(m.display_name)}</option>`).join("");
    if (!methods.length) $("card").value = "pm_card_visa";
  } catch (e) { showError(e); }
}

$("add-method").addEventListener("click", async () => {
  showError(null);
  const key = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now() + Math.random());
  try {
    await api("/api/v1/payment-methods", {
      method: "POST", body: JSON.stringify({ token: $("new-method").value }),
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    });
  } catch (e) { showError(e); }
  loadMethods();
});

$("methods").addEventListener("click", async (e) => {
  const b = e.target.closest("button");
  if (!b) return;
  showError(null);
  try {
    if (b.dataset.default) {
      await api(`/api/v1/payment-methods/${encodeURIComponent(b.dataset.default)}:setDefault`,
                { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
    } else if (b.dataset.remove) {
      await api(`/api/v1/payment-methods/${encodeURIComponent(b.dataset.remove)}`, { method: "DELETE" });
    }
  } catch (err) { showError(err); }
  loadMethods();
});

// ------------------------------------------------------------------ ratings
for (const [id, skip] of [["rate-restaurant", false], ["rate-food", true], ["rate-driver", true]]) {
  $(id).innerHTML = (skip ? '<option value="0">skip</option>' : "") +
    [5, 4, 3, 2, 1].map((n) => `<option value="${n}">${"★".repeat(n)}</option>`).join("");
}

$("rate").addEventListener("click", async () => {
  showError(null);
  const o = state.order;
  try {
    const got = await api(`/api/v1/orders/${encodeURIComponent(o.order_id)}/rating`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        restaurant_rating: Number($("rate-restaurant").value),
        food_rating: Number($("rate-food").value),
        driver_rating: Number($("rate-driver").value),
        restaurant_review: $("rate-comment").value,
      }),
    });
    state.rated = o.order_id;
    $("rate-box").hidden = true;
    $("rated").textContent = `Thanks! Restaurant ${stars(got.restaurant_rating, got.restaurant_review_count)}` +
      ` · Food ${stars(got.food_rating, got.food_rating_count)}`;
  } catch (e) { showError(e); }
});

$("search").addEventListener("click", search);
search();
loadMethods();
