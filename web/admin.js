// admin.js: the hub's admin dashboard (/admin on the internal listener, or
// the public one when there is no internal listener).
//
// It asks for an admin JWT, keeps it in sessionStorage (this tab only) and
// sends it as "Authorization: Bearer" with every call:
//   GET  /api/admin/timeseries?since=T   every second: the points the hub
//        sampled (connections, rates, latency, broker health)
//   GET  /api/websocket/stats            every 2 s: the node table
//   GET  /api/users/{id}/connections     a user's connections
//   POST /api/users/{id}/disconnect      close them
// A refused token (401, or 403 for a token without the admin role) stops
// the polling and says so. Charts are drawn by uPlot (vendor/, loaded
// first). Nothing is written with innerHTML: every value goes in as text.
// window.hubAdmin exposes the state (data, charts, last point) to tests.
"use strict";

(() => {
  const TOKEN_KEY = "hub.admin.token";
  const POLL_MS = 1000;
  const STATS_MS = 2000;
  const MAX_RETRY_MS = 10000;
  const CHART_HEIGHT = 190;
  const PALETTE = ["#2563eb", "#f59e0b", "#16a34a", "#7c3aed", "#dc2626", "#0891b2", "#db2777", "#65a30d"];

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    gen: 0, // bumped by start and stop: a loop of an older generation ends
    since: 0,
    size: 600,
    node: "",
    retries: 0,
    polls: 0,
    last: null,
    hasBroker: false,
    data: emptyData(),
    charts: {},
    stats: null,
  };
  window.hubAdmin = state;

  function emptyData() {
    return {
      t: [], websocket: [], sse: [], nodes: new Map(),
      deliveries: [], publishes: [], p50: [], p99: [], slow: [], refusals: [], broker: [],
    };
  }

  // ---- the API ----------------------------------------------------------------

  /** One call with the admin token; resolves with {status, body, code, message}. Throws on a network error. */
  async function api(method, path) {
    const res = await fetch(path, {
      method,
      headers: { Accept: "application/json", Authorization: "Bearer " + state.token },
      cache: "no-store",
    });
    const text = await res.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    const err = body && body.error ? body.error : null;
    return {
      status: res.status,
      body,
      code: err ? err.code : "",
      message: err ? err.message : text.slice(0, 200),
    };
  }

  function describe(r) {
    return `${r.status}${r.code ? " " + r.code : ""}${r.message ? ": " + r.message : ""}`;
  }

  // ---- token and life cycle ---------------------------------------------------------

  function start(token, note) {
    state.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // storage refused (privacy settings): the token lasts as long as the page
    }
    state.gen++;
    state.since = 0;
    state.retries = 0;
    state.polls = 0;
    state.last = null;
    state.data = emptyData();
    $("admin-token").value = "";
    $("admin-token").placeholder = "token in use (kept for this tab only)";
    setLive("connecting", "connecting…");
    if (note) message(note, "info");
    else message("");
    const gen = state.gen;
    pollSeries(gen);
    pollStats(gen);
  }

  function stop() {
    state.gen++;
    state.token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
  }

  /** A 401 or 403: stop, forget the token and say why. */
  function refused(r) {
    stop();
    setLive("error", "token refused");
    $("admin-token").placeholder = "admin JWT (role admin)";
    if (r.status === 403) {
      message(`This token is not an admin token (${describe(r)}). The dashboard needs a JWT with the admin role; an API key or a service token cannot read it.`);
    } else if (r.status === 429) {
      message(`Too many failed credentials from this address (${describe(r)}); wait a minute, then enter an admin JWT.`);
    } else {
      message(`The hub refused this token (${describe(r)}). Enter an admin JWT.`);
    }
  }

  function setLive(kind, text) {
    const el = $("live");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function message(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.hidden = text === "";
    el.dataset.kind = kind || "error";
  }

  // ---- polling ----------------------------------------------------------------------

  async function pollSeries(gen) {
    if (gen !== state.gen) return;
    try {
      const r = await api("GET", "/api/admin/timeseries" + (state.since ? "?since=" + state.since : ""));
      if (gen !== state.gen) return;
      if (r.status === 200 && r.body) {
        ingest(r.body);
        state.retries = 0;
        setLive("live", "live");
        if ($("message").dataset.kind === "error" && !$("message").hidden) message("");
      } else if (r.status === 401 || r.status === 403 || r.status === 429) {
        refused(r);
        return;
      } else {
        state.retries++;
        setLive("retrying", "retrying");
        message(`The time series could not be read (${describe(r)}); retrying.`);
      }
    } catch (err) {
      if (gen !== state.gen) return;
      state.retries++;
      setLive("retrying", "hub unreachable");
      message(`Cannot reach the hub (${err.message}); retrying.`);
    }
    const wait = state.retries ? Math.min(MAX_RETRY_MS, POLL_MS * 2 ** state.retries) : POLL_MS;
    setTimeout(() => pollSeries(gen), wait);
  }

  async function pollStats(gen) {
    if (gen !== state.gen) return;
    try {
      const r = await api("GET", "/api/websocket/stats");
      if (gen !== state.gen) return;
      if (r.status === 200 && r.body) {
        state.stats = r.body;
        renderNodes(r.body);
      } else if (r.status === 401 || r.status === 403 || r.status === 429) {
        refused(r);
        return;
      }
    } catch {
      // pollSeries reports an unreachable hub
    }
    setTimeout(() => pollStats(gen), STATS_MS);
  }

  // ---- the time series ----------------------------------------------------------------

  function ingest(body) {
    state.size = body.size || state.size;
    if (body.node && body.node !== state.node) {
      state.node = body.node;
      $("node").textContent = "· " + body.node;
    }
    for (const p of body.points) {
      append(p);
      state.since = p.t;
      state.last = p;
    }
    trim();
    state.polls++;
    renderTiles();
    renderCharts();
  }

  function append(p) {
    const d = state.data;
    const n = d.t.length;
    d.t.push(p.t / 1000);
    d.websocket.push(p.connections?.websocket ?? 0);
    d.sse.push(p.connections?.sse ?? 0);
    const nodes = p.nodes || {};
    for (const name of Object.keys(nodes)) {
      if (!d.nodes.has(name)) d.nodes.set(name, new Array(n).fill(null));
    }
    for (const [name, arr] of d.nodes) arr.push(name in nodes ? nodes[name] : null);
    d.deliveries.push(p.deliveries ?? null);
    d.publishes.push(p.publishes ?? null);
    d.p50.push(p.latencyP50Ms ?? null);
    d.p99.push(p.latencyP99Ms ?? null);
    d.slow.push(p.slowConsumers ?? null);
    d.refusals.push(p.refusals ?? null);
    d.broker.push(p.broker === "ok" ? 1 : p.broker === "down" ? 0 : null);
    if (p.broker && p.broker !== "none") state.hasBroker = true;
  }

  /** Keeps the last state.size points; drops a node with nothing left. */
  function trim() {
    const d = state.data;
    const extra = d.t.length - state.size;
    if (extra <= 0) return;
    for (const k of ["t", "websocket", "sse", "deliveries", "publishes", "p50", "p99", "slow", "refusals", "broker"]) {
      d[k].splice(0, extra);
    }
    for (const [name, arr] of d.nodes) {
      arr.splice(0, extra);
      if (arr.every((v) => v === null)) d.nodes.delete(name);
    }
  }

  // ---- charts -------------------------------------------------------------------------

  function fmtNum(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (v !== 0 && Math.abs(v) < 10 && !Number.isInteger(v)) return v.toFixed(1);
    return Math.round(v).toLocaleString("en-US");
  }

  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 10) return v.toFixed(1) + " ms";
    return Math.round(v).toLocaleString("en-US") + " ms";
  }

  function line(label, color, extra) {
    return {
      label,
      stroke: color,
      width: 2,
      fill: color + "14",
      points: { show: false },
      value: (u, v) => fmtNum(v),
      ...extra,
    };
  }


  /** Axis labels with as many decimals as the step between ticks needs. */
  function ticksFmt(u, ticks) {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    const dec = Math.min(3, (String(+step.toPrecision(3)).split(".")[1] || "").length);
    return ticks.map((v) => v.toLocaleString("en-US", { minimumFractionDigits: dec, maximumFractionDigits: dec }));
  }

  /** Tick steps for counts (connections): whole numbers only. */
  const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6];

  function clock(v) {
    return new Date(v * 1000).toLocaleTimeString("en-GB");
  }

  function makeChart(id, series, opts = {}) {
    const el = $(id);
    const axis = { stroke: "#6b7280", grid: { stroke: "#eef0f3", width: 1 }, ticks: { stroke: "#e3e6eb", width: 1 } };
    const u = new uPlot(
      {
        width: Math.max(240, el.clientWidth),
        height: CHART_HEIGHT,
        cursor: { drag: { x: false, y: false } },
        // labels only: the tiles show the last values, the cursor's point is in the title
        legend: { live: false },
        scales: {
          x: { time: true },
          y: { range: opts.range || ((u, min, max) => [0, max > 0 ? max * 1.15 : 1]) },
        },
        axes: [
          { ...axis, space: 80, values: (u, ticks) => ticks.map(clock) },
          { ...axis, size: 56, values: opts.yValues || ticksFmt, ...(opts.integer ? { incrs: INTEGER_STEPS } : {}) },
        ],
        series: [{ label: "time" }, ...series],
        hooks: { setCursor: [(u) => showCursor(u, el)] },
      },
      opts.data(),
      el,
    );
    u._hubData = opts.data;
    return u;
  }

  /** Hovering a chart shows the values under the cursor in its caption. */
  function showCursor(u, el) {
    const fig = el.closest("figure");
    let out = fig.querySelector(".cursor");
    if (!out) {
      out = document.createElement("span");
      out.className = "cursor";
      fig.querySelector("figcaption").append(out);
    }
    const i = u.cursor.idx;
    if (i === null || i === undefined) {
      out.textContent = "";
      return;
    }
    const parts = [clock(u.data[0][i])];
    u.series.forEach((s, k) => {
      if (k > 0) parts.push(`${s.label} ${s.value(u, u.data[k][i])}`);
    });
    out.textContent = parts.join(" · ");
  }

  function stepped() {
    return uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
  }

  function ensureCharts() {
    const c = state.charts;
    const d = () => state.data;
    if (c.transports) return;
    c.transports = makeChart("chart-transports", [
      line("websocket", PALETTE[0], { paths: stepped() }),
      line("sse", PALETTE[1], { paths: stepped() }),
    ], { data: () => [d().t, d().websocket, d().sse], integer: true });
    c.rates = makeChart("chart-rates", [
      line("deliveries/s", PALETTE[2]),
      line("publishes/s", PALETTE[3]),
    ], { data: () => [d().t, d().deliveries, d().publishes] });
    c.latency = makeChart("chart-latency", [
      line("p50", "#0891b2", { value: (u, v) => fmtMs(v) }),
      line("p99", "#dc2626", { value: (u, v) => fmtMs(v) }),
    ], { data: () => [d().t, d().p50, d().p99] });
    c.cuts = makeChart("chart-cuts", [
      line("slow-consumer closes/s", "#dc2626"),
      line("refused handshakes/s", "#f59e0b"),
    ], { data: () => [d().t, d().slow, d().refusals] });
    c.broker = makeChart("chart-broker", [
      line("broker", PALETTE[2], { paths: stepped(), value: (u, v) => (v === 1 ? "ok" : v === 0 ? "down" : "–") }),
    ], {
      data: () => [d().t, d().broker],
      range: () => [0, 1.2],
      yValues: (u, ticks) => ticks.map((v) => (v === 1 ? "ok" : v === 0 ? "down" : "")),
    });
  }

  /** The node chart has one series per node: it is rebuilt when the set changes. */
  function ensureNodeChart() {
    const names = [...state.data.nodes.keys()].sort();
    const c = state.charts;
    if (c.nodes && c.nodes._hubNames === names.join("\n")) return;
    if (c.nodes) c.nodes.destroy();
    c.nodes = makeChart(
      "chart-nodes",
      names.map((name, i) => line(name, PALETTE[i % PALETTE.length], { paths: stepped() })),
      { data: () => [state.data.t, ...names.map((n) => state.data.nodes.get(n))], integer: true },
    );
    c.nodes._hubNames = names.join("\n");
  }

  function renderCharts() {
    if (typeof uPlot === "undefined") return;
    ensureCharts();
    ensureNodeChart();
    const brokerEl = $("chart-broker");
    if (brokerEl.hidden === state.hasBroker) {
      brokerEl.hidden = !state.hasBroker;
      $("broker-note").hidden = state.hasBroker;
      if (state.hasBroker) state.charts.broker.setSize({ width: Math.max(240, brokerEl.clientWidth), height: CHART_HEIGHT });
    }
    for (const u of Object.values(state.charts)) u.setData(u._hubData());
  }

  window.addEventListener("resize", () => {
    for (const u of Object.values(state.charts)) {
      const el = u.root.parentElement;
      u.setSize({ width: Math.max(240, el.clientWidth), height: CHART_HEIGHT });
    }
  });

  // ---- tiles and tables -------------------------------------------------------------------

  function renderTiles() {
    const p = state.last;
    if (!p) return;
    const ws = p.connections?.websocket ?? 0;
    const sse = p.connections?.sse ?? 0;
    $("tile-connections").textContent = fmtNum(ws + sse);
    $("tile-transports").textContent = `websocket ${fmtNum(ws)} · sse ${fmtNum(sse)}`;
    $("tile-users").textContent = fmtNum(p.users);
    $("tile-deliveries").textContent = fmtNum(p.deliveries);
    $("tile-publishes").textContent = `publishes/s ${fmtNum(p.publishes)}`;
    $("tile-p99").textContent = fmtMs(p.latencyP99Ms);
    $("tile-p50").textContent = `p50 ${fmtMs(p.latencyP50Ms)}`;
    $("tile-cuts").textContent = `${fmtNum(p.slowConsumers)} · ${fmtNum(p.refusals)}`;
    const b = $("tile-broker");
    b.dataset.state = p.broker;
    b.textContent = p.broker === "ok" ? "reachable" : p.broker === "down" ? "down" : "none";
    $("tile-broker-sub").textContent =
      p.broker === "down" ? p.brokerError || "unreachable" : p.broker === "ok" ? "Redis backplane" : "single in-memory node";
  }

  function fmtUptime(s) {
    if (typeof s !== "number") return "–";
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
  }

  function renderNodes(st) {
    const members = st.cluster && Array.isArray(st.cluster.members) ? st.cluster.members : null;
    const rows = members || [{ ...st, reportedAt: null }];
    const tbody = $("nodes").querySelector("tbody");
    tbody.replaceChildren();
    for (const n of rows) {
      const tr = document.createElement("tr");
      tr.dataset.node = n.node;
      cell(tr, n.node + (n.node === st.node ? " (this node)" : ""));
      cell(tr, fmtNum(n.connections?.websocket ?? 0), "num");
      cell(tr, fmtNum(n.connections?.sse ?? 0), "num");
      cell(tr, fmtNum(n.totalConnections), "num");
      cell(tr, fmtNum(n.activeUsers), "num");
      cell(tr, fmtUptime(n.uptimeSeconds), "num");
      const ago = n.reportedAt ? Math.max(0, Math.round((Date.now() - Date.parse(n.reportedAt)) / 1000)) : null;
      cell(tr, ago === null ? "now" : ago + " s ago");
      tbody.append(tr);
    }
    let note = "No broker: this hub is a single node.";
    if (st.cluster && st.cluster.error) note = `Cluster stats unavailable (${st.cluster.error.code}): showing this node only.`;
    else if (members) note = `${members.length} node${members.length === 1 ? "" : "s"} reporting through the broker (every 2 s).`;
    $("nodes-note").textContent = note;
  }

  // ---- a user's connections ---------------------------------------------------------------

  function userResult(text, kind) {
    const el = $("user-result");
    el.textContent = text;
    el.dataset.kind = kind || "";
  }

  function userId() {
    return $("user-id").value.trim();
  }

  async function lookup() {
    const id = userId();
    const table = $("user-connections");
    if (!id) return;
    if (!state.token) {
      userResult("Enter an admin token first.", "error");
      return;
    }
    $("user-disconnect").disabled = false;
    userResult("Looking up " + id + "…");
    let r;
    try {
      r = await api("GET", `/api/users/${encodeURIComponent(id)}/connections`);
    } catch (err) {
      userResult("Request failed: " + err.message, "error");
      return;
    }
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    if (r.status !== 200 || !r.body || !Array.isArray(r.body.connections)) {
      table.hidden = true;
      const hint = r.status === 404 ? " (this hub does not list a user's connections; Disconnect still works)" : "";
      userResult(`Lookup of ${id}: ${describe(r)}${hint}`, "error");
      if (r.status === 401 || r.status === 403) refused(r);
      return;
    }
    const conns = r.body.connections;
    for (const c of conns) {
      const tr = document.createElement("tr");
      tr.dataset.connectionId = c.connectionId;
      cell(tr, c.connectionId, "mono");
      cell(tr, c.transport);
      cell(tr, c.node);
      cell(tr, c.connectedAt ? new Date(c.connectedAt).toLocaleString("en-GB") : "–");
      tbody.append(tr);
    }
    table.hidden = conns.length === 0;
    userResult(`${id}: ${conns.length} connection${conns.length === 1 ? "" : "s"} on every node.`);
  }

  async function disconnect() {
    const id = userId();
    if (!id || !state.token) return;
    userResult("Disconnecting " + id + "…");
    let r;
    try {
      r = await api("POST", `/api/users/${encodeURIComponent(id)}/disconnect`);
    } catch (err) {
      userResult("Request failed: " + err.message, "error");
      return;
    }
    if (r.status !== 200 || !r.body) {
      userResult(`Disconnect of ${id}: ${describe(r)}`, "error");
      if (r.status === 401 || r.status === 403) refused(r);
      return;
    }
    $("user-connections").hidden = true;
    const n = r.body.closed;
    userResult(`Disconnected ${id}: ${n} connection${n === 1 ? "" : "s"} closed on this node (close 4003; every other node closes its own).`);
  }

  // ---- wiring -------------------------------------------------------------------------------

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("admin-token").value.trim();
    if (!token) {
      message("Enter an admin JWT (a token with the role admin).");
      return;
    }
    start(token);
  });
  $("forget-token").addEventListener("click", () => {
    stop();
    setLive("idle", "no token");
    $("admin-token").placeholder = "admin JWT (role admin)";
    message("Token forgotten. Enter an admin JWT to see this hub.", "info");
  });
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    lookup();
  });
  $("user-disconnect").addEventListener("click", disconnect);

  let stored = null;
  try {
    stored = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    // no storage
  }
  if (stored) {
    start(stored);
  } else {
    message("Enter an admin JWT (a token with the role admin), e.g. from `hubctl token --config hub.yaml --sub ops --roles admin`.", "info");
    // Development mode serves its admin token on the public listener; when
    // this page is served there too, use it.
    fetch("/api/dev/tokens", { headers: { Accept: "application/json" } })
      .then((res) => (res.status === 200 ? res.json() : null))
      .then((dev) => {
        if (dev && dev.adminToken && !state.token) start(dev.adminToken, "Development mode: using the admin token the hub made.");
      })
      .catch(() => {});
  }
})();
