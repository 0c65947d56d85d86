// CryptoJ Trader operator dashboard: plain JavaScript, no dependencies, no build step.
// The token is kept in sessionStorage (gone when the tab closes) and sent as a bearer header.
"use strict";

const TOKEN_KEY = "cryptoj.api_token";
const POLL_MS = 3000;
const STREAM_REFRESH_MS = 500;  // pushed updates are coalesced: at most two refreshes a second
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let refreshTimer = null;
let pollTimer = null;
let streamAbort = null;

const $ = (id) => document.getElementById(id);

function text(el, value) { el.textContent = value === null || value === undefined ? "–" : String(value); }

function cell(row, value, cls) {
  const td = document.createElement("td");
  text(td, value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  const frag = document.createDocumentFragment();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
}

function message(msg) { text($("message"), msg || ""); }

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) throw new Unauthorized("wrong or missing token");
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(path + ": HTTP " + resp.status + ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return resp.json();
}

function fmtAge(s) { return s === null || s === undefined ? "never" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(1) + " s"; }

function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
}

function renderStatus(st) {
  text($("mode"), st.mode);
  const stateEl = $("state");
  text(stateEl, st.trading_state);
  stateEl.className = "state " + st.trading_state;
  stateEl.title = st.trading_state_reason || "";
  text($("uptime"), fmtUptime(st.uptime_s));
  $("kill-button").disabled = false;
  $("resume-button").disabled = st.trading_state === "ACTIVE";
  fill("feeds", st.feeds, (tr, f) => {
    const ageCls = !f.connected || f.stale ? "bad" : "";
    cell(tr, f.product_id);
    cell(tr, f.connected ? fmtAge(f.last_message_age_s) : "disconnected", "num " + ageCls);
    cell(tr, f.book_valid ? "ok" : "resync", f.book_valid ? "good" : "warn");
    cell(tr, f.resyncs, "num");
    cell(tr, f.mid_price, "num");
  });
  const rec = st.reconciliation;
  const recEl = $("reconciliation");
  text(recEl, rec.ok === null ? "not run yet" : rec.ok ? "ok" : "FAILED: " + rec.problems.join("; "));
  recEl.className = rec.ok === false ? "bad" : rec.ok ? "good" : "warn";
}

function renderPositions(rows) {
  fill("positions", rows, (tr, p) => {
    cell(tr, p.product_id); cell(tr, p.size, "num"); cell(tr, p.avg_entry_price, "num"); cell(tr, p.mark_price, "num");
    cell(tr, p.unrealised_pnl, "num"); cell(tr, p.realised_pnl, "num");
  });
}

function renderBalances(rows) {
  fill("balances", rows, (tr, b) => { cell(tr, b.currency); cell(tr, b.available, "num"); cell(tr, b.hold, "num"); cell(tr, b.total, "num"); });
}

function renderOrders(rows) {
  fill("orders", rows, (tr, o) => {
    tr.dataset.coid = o.client_order_id;
    cell(tr, o.client_order_id); cell(tr, o.product_id); cell(tr, o.side); cell(tr, o.kind);
    cell(tr, o.limit_price, "num"); cell(tr, o.base_size || (o.quote_size ? o.quote_size + " (quote)" : null), "num");
    cell(tr, o.filled_size, "num"); cell(tr, o.status);
    const td = document.createElement("td");
    const btn = document.createElement("button");
    btn.type = "button"; btn.className = "small-button cancel-order"; btn.textContent = "cancel";
    btn.addEventListener("click", () => cancelOrder(o.client_order_id, btn));
    td.appendChild(btn); tr.appendChild(td);
  });
}

function renderFills(rows) {
  fill("fills", rows, (tr, f) => {
    cell(tr, new Date(f.time).toLocaleTimeString()); cell(tr, f.product_id); cell(tr, f.side);
    cell(tr, f.price, "num"); cell(tr, f.size, "num"); cell(tr, f.fee, "num"); cell(tr, f.client_order_id);
  });
}

function renderRisk(r) {
  text($("risk-reason"), r.trading_state + (r.reason ? " — " + r.reason : "") +
    (r.daily_pnl !== null ? " · daily PnL " + r.daily_pnl : "") + (r.drawdown !== null ? " · drawdown " + r.drawdown : ""));
  fill("risk-limits", r.limits, (tr, l) => {
    cell(tr, l.name); cell(tr, l.limit === null ? "off" : l.limit, "num"); cell(tr, l.usage, "num");
    const td = document.createElement("td");
    if (l.fraction_used !== null && l.fraction_used !== undefined) {
      const bar = document.createElement("span"); bar.className = "bar";
      const i = document.createElement("i");
      const pct = Math.max(0, Math.min(1, l.fraction_used));
      i.style.width = (pct * 100).toFixed(0) + "%";
      i.className = pct >= 1 ? "bad" : pct >= 0.8 ? "warn" : "";
      bar.appendChild(i); td.appendChild(bar); td.title = (l.fraction_used * 100).toFixed(1) + "%";
    }
    tr.appendChild(td);
  });
  const reasons = Object.entries(r.rejections_by_reason).sort((a, b) => b[1] - a[1]);
  fill("rejections", reasons, (tr, [reason, n]) => { cell(tr, reason); cell(tr, n, "num"); });
}

function renderPnl(points) {
  text($("chart-points"), points.length);
  const line = $("chart-line");
  if (points.length === 0) { line.setAttribute("points", ""); return; }
  const last = points[points.length - 1];
  text($("equity"), last.equity); text($("realised"), last.realised_pnl); text($("unrealised"), last.unrealised_pnl);
  // numbers for drawing only; the exact values are the strings shown above
  const ys = points.map((p) => Number(p.equity));
  let min = Math.min(...ys), max = Math.max(...ys);
  if (max === min) { max += 1; min -= 1; }
  const n = points.length;
  const coords = ys.map((y, i) => {
    const x = n === 1 ? 800 : (i / (n - 1)) * 800;
    const yy = 190 - ((y - min) / (max - min)) * 175;
    return x.toFixed(1) + "," + yy.toFixed(1);
  });
  line.setAttribute("points", coords.join(" "));
  text($("chart-max"), max.toFixed(2)); text($("chart-min"), min.toFixed(2));
}

async function refresh() {
  refreshTimer = null;
  try {
    const [st, pos, bal, ord, fil, risk, pnl] = await Promise.all([
      api("/api/status"), api("/api/positions"), api("/api/balances"), api("/api/orders?state=open&limit=200"),
      api("/api/fills?limit=50"), api("/api/risk"), api("/api/pnl?limit=2000"),
    ]);
    renderStatus(st); renderPositions(pos); renderBalances(bal); renderOrders(ord); renderFills(fil); renderRisk(risk); renderPnl(pnl);
  } catch (e) {
    if (e instanceof Unauthorized) { logout("the token was refused"); return; }
    message(String(e.message || e));
  }
}

function scheduleRefresh(delay = 200) {
  if (refreshTimer === null) refreshTimer = setTimeout(refresh, delay);
}

async function cancelOrder(coid, btn) {
  btn.disabled = true;
  try {
    const o = await api("/api/orders/" + encodeURIComponent(coid) + "/cancel", { method: "POST" });
    message("cancel " + coid + ": " + o.status);
  } catch (e) { message(String(e.message || e)); }
  scheduleRefresh(0);
}

async function streamLoop() {
  while (token) {
    const ctrl = new AbortController();
    streamAbort = ctrl;
    try {
      const resp = await fetch("/api/stream", { headers: { Authorization: "Bearer " + token }, signal: ctrl.signal });
      if (resp.status === 401) { logout("the token was refused"); return; }
      if (!resp.ok || !resp.body) throw new Error("stream HTTP " + resp.status);
      $("live").className = "live on";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let idx;
        while ((idx = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, idx); buf = buf.slice(idx + 2);
          if (chunk.split("\n").some((l) => l.startsWith("event:"))) scheduleRefresh(STREAM_REFRESH_MS);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    $("live").className = "live off";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  refresh();
  if (pollTimer === null) pollTimer = setInterval(() => scheduleRefresh(0), POLL_MS);
  streamLoop();
}

function logout(why) {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  if (streamAbort) streamAbort.abort();
  if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
  $("main").hidden = true;
  $("login").hidden = false;
  text($("login-error"), why || "");
  $("kill-button").disabled = true;
  $("resume-button").disabled = true;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token = $("token-input").value.trim();
    try {
      await api("/api/status");
    } catch (e) {
      logout(e instanceof Unauthorized ? "wrong token" : String(e.message || e));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    text($("login-error"), "");
    start();
  });
  $("kill-button").addEventListener("click", () => $("kill-dialog").showModal());
  $("kill-dialog").addEventListener("close", async () => {
    if ($("kill-dialog").returnValue !== "confirm") return;
    message("kill switch: cancelling every order…");
    try {
      const r = await api("/api/kill", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: $("kill-reason").value || "operator kill from dashboard", flatten: $("kill-flatten").checked }),
      });
      message("kill " + (r.confirmed ? "CONFIRMED" : "NOT confirmed — check the venue") + ": cancelled " + r.cancelled.length +
        " order(s), open after: " + r.open_after.length + ", state " + r.trading_state);
    } catch (e) { message(String(e.message || e)); }
    scheduleRefresh(0);
  });
  $("resume-button").addEventListener("click", async () => {
    try {
      const r = await api("/api/resume", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({}) });
      message(r.ok ? "resumed: " + r.trading_state : "resume refused: " + r.problems.join("; "));
    } catch (e) { message(String(e.message || e)); }
    scheduleRefresh(0);
  });
  $("cancel-all").addEventListener("click", async () => {
    try {
      const r = await api("/api/orders/cancel-all", { method: "POST" });
      message("cancel all: " + r.length + " order(s)");
    } catch (e) { message(String(e.message || e)); }
    scheduleRefresh(0);
  });
  if (token) start();
});
