// aiosd's status page: polls /ui/api/live once a second and redraws. Every piece of data reaches
// the DOM as text (textContent, createTextNode), never as markup.
"use strict";

const POLL_MS = 1000;
const STEP = 5;             // seconds per chart point
const KEY_STORE = "aiosd-key";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  requestsAfter: 0,
  historyAfter: null,
  window: 900,
  buckets: new Map(),       // second -> bucket
  rows: [],                 // newest first, at most 200
  retryWaits: [],           // [{row data, until (ms, local clock)}]
  uptime: null,
  timer: null,
  polling: false,
  openLog: null,
};

// --- small DOM helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function fill(tbody, rows, emptyText, columns) {
  const cells = rows.map((row) => row instanceof Node ? row
    : el("tr", null, ...row.map((cell) => cell instanceof Node ? cell : el("td", null, cell))));
  if (!cells.length) cells.push(el("tr", "empty", Object.assign(el("td", "muted", emptyText), { colSpan: columns })));
  tbody.replaceChildren(...cells);
}

function pair(dl, entries) {
  dl.replaceChildren(...entries.flatMap(([name, value]) => [el("dt", null, name), el("dd", null, value)]));
}

function seconds(s) {
  if (s == null) return "–";
  if (s === 0) return "0";
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 0)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function clock(epochSeconds) {
  if (epochSeconds == null) return "–";
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function when(epochSeconds) {
  if (epochSeconds == null) return "never";
  return new Date(epochSeconds * 1000).toLocaleString([], { hour12: false });
}

function badge(text, cls) {
  return el("td", null, el("span", `badge ${cls}`, text));
}

// --- fetching ------------------------------------------------------------------------------------

async function getJSON(path) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw Object.assign(new Error("aiosd does not answer"), { fromServer: true });
  }
  if (response.status === 401) throw Object.assign(new Error("key needed"), { auth: true });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message += ": " + (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(message), { fromServer: true });
  }
  return response.json();
}

async function poll() {
  if (state.polling) return;
  state.polling = true;
  state.timer = null;
  const query = new URLSearchParams({ requests_after: state.requestsAfter });
  if (state.historyAfter != null) query.set("history_after", state.historyAfter);
  let again = true;
  try {
    const live = await getJSON(`/ui/api/live?${query}`);
    if ((state.uptime != null && live.uptime_seconds < state.uptime) || live.requests_seq < state.requestsAfter) {
      reset();  // aiosd restarted: its counters began again; the next poll fetches everything
    } else {
      state.uptime = live.uptime_seconds;
      $("key-form").hidden = true;
      $("main").hidden = false;
      render(live);
      setConnection("live", "ok");
    }
  } catch (error) {
    if (error.auth) {
      again = false;  // until a key is entered: polling on would only log refusals
      askForKey(sessionStorage.getItem(KEY_STORE) ? "that key was refused" : "");
    } else if (error.fromServer) {
      setConnection(`no answer (${error.message})`, "bad");
    } else {
      console.error(error);
      setConnection(`page error (${error.message})`, "bad");  // the page's own bug, not aiosd's
    }
  } finally {
    state.polling = false;
  }
  if (again) schedule();
}

function schedule() {
  if (state.timer == null && !document.hidden) state.timer = setTimeout(poll, POLL_MS);
}

function reset() {
  Object.assign(state, { requestsAfter: 0, historyAfter: null, buckets: new Map(), rows: [], uptime: null });
}

function setConnection(text, cls) {
  const node = $("connection");
  node.textContent = text;
  node.className = `badge ${cls}`;
}

function askForKey(problem) {
  $("main").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = problem;
  $("summary").textContent = "";  // not "connecting…": it waits for a key, not for aiosd
  setConnection("key needed", "unknown");
  $("key-input").focus();
}

// --- rendering -----------------------------------------------------------------------------------

function render(live) {
  $("summary").textContent =
    `v${live.version} · up ${seconds(live.uptime_seconds)} · config generation ${live.config.generation}`;
  renderKernels(live.kernels);
  renderQueue(live.queue);
  addHistory(live);
  drawCharts(live.history_second, live.uptime_seconds);
  addRows(live);
  renderModels(live.models, live.model_refresh);
  renderConfig(live.config);
  renderOpenClaw(live.openclaw);
}

function renderKernels(kernels) {
  fill($("kernels").tBodies[0], kernels.map((k) => {
    const bar = el("td", null, `${k.in_flight} / ${k.capacity} `, meter(k.in_flight, k.capacity));
    const latency = k.latency ? `${seconds(k.latency.p50)} / ${seconds(k.latency.p90)} / ${seconds(k.latency.last)}` : "–";
    const last = k.last_answer_seconds_ago == null ? "never" : `${seconds(k.last_answer_seconds_ago)} ago`;
    return [el("td", "mono", k.name), badge(k.health, k.health === "up" ? "ok" : k.health === "unknown" ? "unknown" : "bad"),
            bar, latency, last, el("td", "reason", k.reason === "ok" ? "" : k.reason)];
  }), "no kernel", 6);
}

function meter(value, max) {
  const outer = el("span", "meter");
  const inner = el("span", value >= max ? "full" : "");
  inner.style.width = `${Math.min(100, (100 * value) / Math.max(1, max))}%`;
  outer.append(inner);
  return outer;
}

function renderQueue(queue) {
  $("queue-summary").textContent =
    `${queue.waiting} waiting, ${queue.in_flight} of ${queue.capacity} slots in use` +
    (queue.oldest_wait_seconds == null ? "" : `, oldest waiting ${seconds(queue.oldest_wait_seconds)}`) +
    (queue.not_shown ? ` (${queue.not_shown} more not listed)` : "") +
    (queue.slots_out ? `; ${queue.slots_out} slot${queue.slots_out === 1 ? "" : "s"} out: ${queue.out.join("; ")}`
      : queue.out.length ? `; every kernel is ejected, so requests still go to them: ${queue.out.join("; ")}` : "");
  const rows = [];
  for (const c of queue.classes) {
    for (const k of c.keys) {
      const sessions = (k.sessions || []).map((s) => `${s.session} ${s.waiting}`).join(", ");
      rows.push([c.name, k.key, el("td", "mono", sessions), k.waiting, k.in_flight, seconds(k.oldest_wait_seconds)]);
    }
  }
  fill($("queue").tBodies[0], rows, "nothing queued", 6);
  fill($("waiting").tBodies[0], queue.waiting_requests.map((w) =>
    [el("td", "mono", w.request_id), w.key, el("td", "mono", w.session), w.model, seconds(w.waited_seconds)]),
  "none", 5);
  const received = performance.now();
  state.retryWaits = queue.retry_waits.map((r) => ({ ...r, until: received + r.seconds_left * 1000 }));
  renderRetries();
}

function renderRetries() {
  const now = performance.now();
  fill($("retries").tBodies[0], state.retryWaits.map((r) =>
    [el("td", "mono", r.request_id), r.key, r.model, r.attempts, el("td", "countdown", seconds(Math.max(0, (r.until - now) / 1000)))]),
  "none", 5);
}

function addRows(live) {
  for (const row of live.requests) state.rows.unshift(row);
  state.rows.length = Math.min(state.rows.length, 200);
  state.requestsAfter = live.requests_seq;
  $("refused-auth").textContent = live.refused_auth
    ? `${live.refused_auth} request(s) without a valid API key were refused: counted here, not listed.` : "";
  if (!live.requests.length && $("requests").tBodies[0].rows.length) return;
  $("requests-count").textContent = `(${state.rows.length})`;
  fill($("requests").tBodies[0], state.rows.map(requestRow), "no requests yet", 12);
}

function requestRow(r) {
  const tr = el("tr", r.outcome === "ok" ? "" : "failed",
    el("td", null, clock(r.finished_at)), el("td", "mono", r.request_id), el("td", null, r.key), el("td", null, r.model),
    el("td", null, r.outcome), el("td", null, r.status), el("td", null, attemptsCell(r)), el("td", "mono", r.kernels.join(", ")),
    el("td", null, seconds(r.queue_wait)), el("td", null, seconds(r.kernel_time)), el("td", null, seconds(r.total)),
    el("td", "mono", r.session));
  tr.tabIndex = 0;
  tr.title = "show this request's log lines";
  tr.addEventListener("click", () => showLog(r.request_id));
  tr.addEventListener("keydown", (event) => { if (event.key === "Enter") showLog(r.request_id); });
  return tr;
}

// A continued answer (the kernel cut it at its token cap) says how many pieces were joined.
function attemptsCell(r) {
  return r.pieces > 1 ? `${r.attempts} (${r.pieces} pieces)` : String(r.attempts);
}

async function showLog(requestId) {
  state.openLog = requestId;
  $("log-panel").hidden = false;
  $("log-id").textContent = requestId;
  $("log-lines").textContent = "loading…";
  try {
    const log = await getJSON(`/ui/api/requests/${encodeURIComponent(requestId)}/log`);
    if (state.openLog !== requestId) return;
    $("log-lines").textContent = log.lines.length
      ? log.lines.map((l) => `${clock(l.at)} ${l.level.padEnd(7)} ${l.logger}: ${l.line}`).join("\n")
      : "no log lines kept for this request (the ring of recent lines has moved on, or it logged nothing)";
  } catch (error) {
    $("log-lines").textContent = `could not load the log: ${error.message}`;
  }
}

function renderModels(models, refresh) {
  $("model-refresh").textContent = refresh
    ? `kernel's model list: ${refresh.ok ? "read" : "failed"} ${seconds(refresh.seconds_ago)} ago${refresh.ok ? "" : ": " + refresh.message}`
    : "the kernel's model list has not been read yet";
  fill($("models").tBodies[0], models.map((m) => {
    const state = !m.available ? badge("unavailable", "bad") : m.unconfirmed ? badge("unconfirmed", "unknown") : badge("exposed", "ok");
    if (m.reason) state.append(el("div", "reason", m.reason));
    return [el("td", "mono", m.id), el("td", "mono", m.kernel_model),
            m.source === "map" ? "models.map" : "the kernel's list", state];
  }), "no models", 4);
}

function renderConfig(config) {
  pair($("config"), [
    ["file", config.path || "–"],
    ["generation", config.generation],
    ["applied", when(config.applied_at)],
    ["last reload", config.last_reload_ok == null ? "–" : config.last_reload_ok ? "ok" : "REFUSED (serving the last good config)"],
  ]);
  const refused = config.last_refused;
  $("refused").hidden = !refused;
  if (!refused) return;
  $("refused-when").textContent = `${when(refused.at)} (${refused.reason}): ${refused.problems.length} problem(s)`;
  $("refused-problems").replaceChildren(...refused.problems.map((p) => el("li", "mono", p)));
}

function renderOpenClaw(openclaw) {
  pair($("openclaw"), [
    ["file", openclaw.path || "OpenClaw's default location"],
    ["sync", openclaw.sync_enabled ? "on" : "off (openclaw.sync: false)"],
    ["last sync", openclaw.outcome ? `${openclaw.outcome} at ${when(openclaw.at)}` : "none yet"],
    ["result", openclaw.message || "–"],
  ]);
}

// --- charts: inline SVG, drawn from the per-second buckets ---------------------------------------

function addHistory(live) {
  state.window = live.history_window;
  for (const b of live.history) state.buckets.set(b.second, b);
  const oldest = live.history_second - state.window;
  for (const second of state.buckets.keys()) if (second <= oldest) state.buckets.delete(second);
  // Ask again for the current second next time: it was still filling.
  state.historyAfter = live.history_second - 1;
}

// The seconds the charts span: the whole window, or while aiosd has run for less, the time it has run
// (at least a minute), so that a daemon that just started does not show 15 flat minutes and a spike.
function chartSpan(uptime) {
  const ran = Math.ceil(Math.max(60, uptime || 0) / STEP) * STEP;
  return Math.min(state.window, ran);
}

function spanLabel(span) {
  return span % 60 ? `${span} s` : `${span / 60} min`;
}

function series(now, span) {
  const steps = Math.floor(span / STEP);
  const out = [];
  for (let i = steps - 1; i >= 0; i--) {
    const end = now - i * STEP;
    const sum = { requests: 0, errors: 0, overhead: 0, queue_wait: 0, kernel_time: 0, retry_wait: 0 };
    for (let s = end - STEP + 1; s <= end; s++) {
      const b = state.buckets.get(s);
      if (b) for (const name in sum) sum[name] += b[name];
    }
    const per = sum.requests || 1;
    out.push({
      rate: sum.requests / STEP, errors: sum.errors / STEP,
      kernel: sum.kernel_time / per, queue: sum.queue_wait / per, retry: sum.retry_wait / per,
      overhead: (1000 * sum.overhead) / per,
    });
  }
  return out;
}

function drawCharts(now, uptime) {
  const span = chartSpan(uptime);
  const points = series(now, span);
  $("chart-span").textContent = span < state.window ? `Since aiosd started (${spanLabel(span)})` : `Last ${spanLabel(span)}`;
  chart($("chart-rate"), points, span, [["rate", "ok"], ["errors", "bad"]], (v) => v.toFixed(v < 10 ? 1 : 0));
  chart($("chart-latency"), points, span, [["kernel", "kernel"], ["queue", "queue"], ["retry", "retry"]], (v) => seconds(v));
  chart($("chart-overhead"), points, span, [["overhead", "overhead"]], (v) => `${v.toFixed(v < 1 ? 2 : 1)} ms`);
}

function chart(container, points, span, lines, label) {
  const width = 600, height = 140, left = 56, bottom = 18;
  let max = 0;
  for (const p of points) for (const [name] of lines) max = Math.max(max, p[name]);
  const top = max > 0 ? max * 1.1 : 1;
  const x = (i) => left + ((width - left - 4) * i) / Math.max(1, points.length - 1);
  const y = (v) => 4 + (height - bottom - 4) * (1 - v / top);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.dataset.max = String(max);
  svg.dataset.span = String(span);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const name in attrs) node.setAttribute(name, attrs[name]);
    if (text != null) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: left, x2: width - 4, y1: y(0), y2: y(0), class: "axis" });
  add("line", { x1: left, x2: width - 4, y1: y(top / 2), y2: y(top / 2), class: "grid" });
  add("text", { x: left - 4, y: y(top / 2) + 4, class: "label", "text-anchor": "end" }, label(top / 2));
  add("text", { x: left - 4, y: y(0) + 4, class: "label", "text-anchor": "end" }, label(0));
  add("text", { x: left, y: height - 2, class: "label", "data-axis": "start" }, `−${spanLabel(span)}`);
  add("text", { x: width - 4, y: height - 2, class: "label", "text-anchor": "end" }, "now");
  for (const [name, cls] of lines) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[name]).toFixed(1)}`).join("");
    add("path", { d, class: `series ${cls}`, "data-series": name });
  }
  container.replaceChildren(svg);
}

// --- start ---------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    reset();
    poll();
  });
  $("log-close").addEventListener("click", () => { state.openLog = null; $("log-panel").hidden = true; });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && state.timer != null) { clearTimeout(state.timer); state.timer = null; }
    else if (!document.hidden && state.timer == null) poll();
  });
  setInterval(() => { if (state.retryWaits.length) renderRetries(); }, 250);
  poll();
});
