// darkscope analysts' console: a hash-routed page over the JSON query API.
// Every view's state lives in the URL (#/page/args?from=..&to=..), so a link
// reopens the same view. No request leaves this aggregator (CSP 'self').
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
const pct = (x) => (100 * x).toFixed(1) + " %";
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const HOUR = 3600e3;
const when = (t) => (t ? String(t).replace(/\.\d+Z$/, "Z").replace("T", " ") : "–");
const PRESETS = { "1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR };

// An analyst token, when the aggregator asks for one (kept for this tab only).
async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("darkscope-token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.error || r.status + " " + r.statusText);
    e.auth = r.status === 401;
    throw e;
  }
  return body;
}

function signIn(message) {
  $("#main").innerHTML = `<h1>Sign in</h1><p class="muted">${esc(message)}</p>
    <form id="signin"><input id="token" type="password" placeholder="analyst token" size="50" aria-label="Analyst token">
    <button>Sign in</button></form>`;
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("darkscope-token", $("#token").value.trim());
    newest = null;
    render();
  });
  document.body.dataset.ready = "signin";
}

// Parses "#/port/tcp/23?from=...&to=..." into {page, args, q}.
function parseHash() {
  const h = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = h.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "overview", args: parts.slice(1), q: new URLSearchParams(query || "") };
}

function go(page, args, q) {
  const path = [page, ...args.map(encodeURIComponent)].join("/");
  const qs = q.toString();
  location.hash = "#/" + path + (qs ? "?" + qs : "");
}

// The time range: explicit from/to in the URL, else a preset ending at the
// newest data (so replayed captures are in view), else now.
let newest = null;
async function range(q) {
  if (q.get("from") && q.get("to")) return { from: q.get("from"), to: q.get("to"), preset: "custom" };
  if (newest === null) {
    try {
      const s = await api("/api/v1/sensors");
      const ends = s.sensors.map((x) => x.last_window_end).filter(Boolean).map((t) => Date.parse(t));
      newest = ends.length ? Math.max(...ends) : Date.now();
    } catch (e) {
      newest = Date.now();
    }
  }
  const preset = PRESETS[q.get("range")] ? q.get("range") : "24h";
  const to = new Date(newest + 60e3);
  const from = new Date(to.getTime() - PRESETS[preset]);
  return { from: from.toISOString().replace(/\.\d+Z$/, "Z"), to: to.toISOString().replace(/\.\d+Z$/, "Z"), preset };
}

// local (own sensors) or global (with federation peers' data), from the URL.
const scopeOf = (q) => (q.get("scope") === "global" ? "global" : "local");

function showRange(r) {
  $("#range-preset").value = r.preset;
  $("#range-from").value = r.from.slice(0, 16);
  $("#range-to").value = r.to.slice(0, 16);
}

function table(headers, rows, test) {
  const th = headers.map((h) => `<th class="${h.n ? "n" : ""}">${esc(h.t)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => "<tr>" + r.map((c, i) => `<td class="${headers[i].n ? "n" : ""}" ${c.test ? `data-test="${c.test}"` : ""}>${c.html ?? esc(c)}</td>`).join("") + "</tr>").join("")
    : `<tr><td colspan="${headers.length}" class="muted">nothing in this range</td></tr>`;
  return `<table data-test="${test}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}

function portLink(p, q) {
  const keep = new URLSearchParams(q);
  return `<a href="#/port/${p.proto}/${p.port}?${keep}">${p.proto}/${p.port}</a>`;
}

// A small inline SVG line of distinct sources per step (no axes), for tables.
function sparkline(points) {
  const w = 120, h = 24;
  const max = Math.max(1, ...points.map((p) => p.sources));
  const step = points.length > 1 ? w / (points.length - 1) : 0;
  const xy = points.map((p, i) => `${(i * step).toFixed(1)},${(h - 1 - (p.sources / max) * (h - 2)).toFixed(1)}`).join(" ");
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" data-test="spark" data-points="${points.length}" role="img" aria-label="distinct sources over the range, peak ${max}"><polyline points="${xy}"/></svg>`;
}

// A horizontal bar for a share in [0, 1].
const bar = (x) => `<span class="bar"><span style="width:${(100 * Math.min(1, Math.max(0, x))).toFixed(1)}%"></span></span>`;

const iso = (t) => new Date(t).toISOString().replace(/\.\d+Z$/, "Z");

// A colour of the current (light or dark) theme.
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Axis text and grid in the theme's colours.
const themedAxis = () => ({ stroke: cssVar("--muted"), grid: { stroke: cssVar("--line") }, ticks: { stroke: cssVar("--line") } });

function chart(el, points, title, marks = [], height = 260) {
  const xs = points.map((p) => Date.parse(p.time) / 1000);
  // Alert starts as vertical red lines.
  const markHook = (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#dc2626";
    ctx.lineWidth = 2;
    for (const m of marks) {
      const x = u.valToPos(Date.parse(m) / 1000, "x", true);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  };
  const data = [xs, points.map((p) => p.sources), points.map((p) => p.packets)];
  const width = Math.max(320, el.clientWidth - 12);
  el.dataset.points = String(points.length);
  el.dataset.marks = String(marks.length);
  const axis = themedAxis();
  // Whole numbers of sources on the axis.
  const counts = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7];
  return new uPlot(
    {
      title, width, height,
      legend: { show: height >= 200 },
      series: [{}, { label: "distinct sources", stroke: cssVar("--accent"), width: 2, scale: "src" },
        { label: "packets", stroke: "#9ca3af", width: 1, scale: "pkt" }],
      axes: [{ ...axis }, { ...axis, scale: "src", label: "sources", incrs: counts },
        { ...axis, scale: "pkt", side: 1, label: "packets", grid: { show: false } }],
      hooks: { draw: [markHook] },
    },
    data, el);
}

async function overview(q, r) {
  const qs = `from=${r.from}&to=${r.to}&scope=${scopeOf(q)}`;
  const [o, top, al] = await Promise.all([
    api(`/api/v1/overview?${qs}`),
    api(`/api/v1/ports/top?${qs}&limit=15`),
    api(`/api/v1/alerts?state=open`),
  ]);
  const classes = Object.entries(o.classes).filter(([, v]) => v > 0);
  let html = `<h1>Overview <span class="muted" data-test="scope">${scopeOf(q)}</span></h1><div class="cards">
    <div class="card"><div class="v" data-test="packets">${fmt(o.packets)}</div><div class="k">darknet packets</div></div>
    <div class="card"><div class="v" data-test="windows">${fmt(o.windows)}</div><div class="k">windows</div></div>
    <div class="card"><div class="v" data-test="active-sensors">${fmt(o.active_sensors)}</div><div class="k">active sensors</div></div>
    <div class="card"><div class="v"><a href="#/alerts?state=open&${q}" data-test="open-alerts">${fmt(al.alerts.length)}</a></div><div class="k">open alerts</div></div>
    ${classes.map(([k, v]) => `<div class="card"><div class="v" data-test="class-${k}">${fmt(v)}</div><div class="k">${esc(k)}</div></div>`).join("")}
  </div>`;
  html += `<h2>All darknet traffic: distinct sources and packets per step</h2><div class="chart" id="chart"></div>`;
  html += `<div class="grid"><div><h2>Top ports by distinct sources</h2>` +
    table([{ t: "port" }, { t: "sources", n: 1 }, { t: "packets", n: 1 }, { t: "share", n: 1 }, { t: "sources over time" }],
      top.ports.map((p, i) => [{ html: portLink(p, q), test: i === 0 ? "top-port" : "" }, { html: fmt(p.sources), test: i === 0 ? "top-port-sources" : "" }, fmt(p.packets), pct(p.share),
        { html: `<span class="muted">…</span>`, test: `spark-${p.proto}-${p.port}` }]), "top-ports") +
    `</div><div><h2>Top sources by packets</h2>` +
    table([{ t: "source" }, { t: "packets", n: 1 }],
      o.top_sources.map((s, i) => [{ html: `<a href="#/source/${esc(s.ip)}?${q}">${esc(s.ip)}</a>`, test: i === 0 ? "top-source" : "" }, fmt(s.packets)]), "top-sources") +
    `</div></div>`;
  $("#main").innerHTML = html;
  const all = await api(`/api/v1/series?${qs}`);
  if (o.windows > 0) chart($("#chart"), all.points, "");
  else $("#chart").innerHTML = `<p class="muted">no data in this range</p>`;
  // One sparkline per top port, about 30 steps over the range.
  const step = Math.max(60, Math.ceil((Date.parse(r.to) - Date.parse(r.from)) / 1000 / 30 / 60) * 60);
  const lines = await Promise.all(top.ports.map((p) => api(`/api/v1/ports/${p.proto}/${p.port}/series?${qs}&step=${step}`)));
  top.ports.forEach((p, i) => {
    const cell = document.querySelector(`[data-test="spark-${p.proto}-${p.port}"]`);
    if (cell) cell.innerHTML = sparkline(lines[i].points);
  });
}

async function port(q, r, args) {
  const [proto, num] = args;
  const qs = `from=${r.from}&to=${r.to}&scope=${scopeOf(q)}`;
  const path = `/api/v1/ports/${encodeURIComponent(proto)}/${encodeURIComponent(num)}`;
  const [s, d, al] = await Promise.all([
    api(`${path}/series?${qs}`),
    api(`${path}?${qs}&limit=20`),
    api(`/api/v1/alerts?since=${r.from}`),
  ]);
  const mine = al.alerts.filter((a) => a.proto === proto && String(a.port) === String(num) && a.start < r.to);
  const total = s.points.reduce((a, p) => a + p.packets, 0);
  const fps = d.fingerprints.filter((f) => f.sources > 0);
  $("#main").innerHTML = `<h1>Port <span data-test="port-title">${esc(proto)}/${esc(num)}</span></h1>
    <div class="cards">
      <div class="card"><div class="v" data-test="port-packets">${fmt(total)}</div><div class="k">packets</div></div>
      <div class="card"><div class="v" data-test="port-sources">${fmt(d.sources)}</div><div class="k">distinct sources (range)</div></div>
      <div class="card"><div class="v" data-test="port-sensors">${fmt(d.sensors.length)}</div><div class="k">sensors that see it</div></div>
      <div class="card"><div class="v" data-test="port-countries">${fmt(d.countries.length)}</div><div class="k">sensor countries</div></div>
      <div class="card"><div class="v">${s.step_seconds}s</div><div class="k">step</div></div>
    </div>
    <h2>Distinct sources and packets per step${mine.length ? " (red: alerts)" : ""}</h2><div class="chart" id="chart"></div>
    <div class="grid"><div><h2>Top sources <span class="muted">(packets to this port)</span></h2>` +
    table([{ t: "source" }, { t: "packets", n: 1 }, { t: "sensors", n: 1 }, { t: "fingerprints" }, { t: "last seen" }],
      d.top_sources.map((x, i) => [{ html: `<a href="#/source/${esc(x.ip)}?${q}">${esc(x.ip)}</a>`, test: i === 0 ? "port-top-source" : "" },
        { html: fmt(x.packets), test: i === 0 ? "port-top-source-packets" : "" }, fmt(x.sensors), x.fingerprints.join(", ") || "–", when(x.last_seen)]), "port-sources") +
    `</div><div><h2>Fingerprint shares <span class="muted">(of ${fmt(d.sources_found)} sources)</span></h2>` +
    table([{ t: "fingerprint" }, { t: "sources", n: 1 }, { t: "share", n: 1 }, { t: "" }],
      fps.map((f) => [{ html: esc(f.fingerprint), test: `fp-${f.fingerprint}` }, { html: fmt(f.sources), test: `fp-${f.fingerprint}-sources` }, pct(f.share), { html: bar(f.share) }]), "port-fingerprints") +
    `</div><div><h2>Sensors that see it</h2>` +
    table([{ t: "sensor" }, { t: "country" }, { t: "sources", n: 1 }, { t: "packets", n: 1 }],
      d.sensors.map((x, i) => [{ html: esc(x.sensor), test: i === 0 ? "port-sensor" : "" }, x.country, { html: fmt(x.sources), test: i === 0 ? "port-sensor-sources" : "" }, fmt(x.packets)]), "port-sensors") +
    `</div><div><h2>Countries</h2>` +
    table([{ t: "country" }, { t: "sensors", n: 1 }, { t: "sources", n: 1 }, { t: "packets", n: 1 }],
      d.countries.map((x, i) => [{ html: esc(x.country), test: i === 0 ? "port-country" : "" }, fmt(x.sensors), fmt(x.sources), { html: fmt(x.packets), test: i === 0 ? "port-country-packets" : "" }]), "port-countries") +
    `</div></div>
    <h2>Alerts on this port</h2>${alertTable(mine, q)}`;
  chart($("#chart"), s.points, "", mine.map((a) => a.start));
}

function alertTable(alerts, q) {
  return table(
    [{ t: "started" }, { t: "port" }, { t: "severity" }, { t: "observed", n: 1 }, { t: "baseline", n: 1 }, { t: "state" }],
    alerts.map((a, i) => {
      // Open the port around the alert: 6 h before to 2 h after.
      const t = Date.parse(a.start);
      const around = new URLSearchParams(q);
      around.set("from", new Date(t - 6 * HOUR).toISOString().replace(/\.\d+Z$/, "Z"));
      around.set("to", new Date(t + 2 * HOUR).toISOString().replace(/\.\d+Z$/, "Z"));
      around.delete("range");
      return [{ html: esc(a.start), test: i === 0 ? "alert-start" : "" },
        { html: `<a href="#/port/${a.proto}/${a.port}?${around}">${a.proto}/${a.port}</a>${a.group ? ` <span class="muted">from ${esc(a.group.replace(":", " "))}</span>` : ""}`, test: i === 0 ? "alert-port" : "" },
        { html: `<span class="${a.severity === "low" ? "state-warn" : "state-bad"}">${esc(a.severity)}</span>` },
        fmt(a.observed), a.baseline.toFixed(1),
        { html: `<span class="${a.state === "open" ? "state-bad" : "muted"}">${esc(a.state)}</span>`, test: i === 0 ? "alert-state" : "" }];
    }), "alerts");
}

async function alerts(q, r) {
  const state = q.get("state") || "";
  const al = await api(`/api/v1/alerts?since=${r.from}${state ? "&state=" + state : ""}`);
  const severity = q.get("severity") || "";
  const onPort = q.get("port") || "";
  const shown = al.alerts.filter((a) => a.start < r.to && (!severity || a.severity === severity) && (!onPort || `${a.proto}/${a.port}` === onPort));
  const pick = (k, v) => { const n = new URLSearchParams(q); if (v) n.set(k, v); else n.delete(k); return `#/alerts?${n}`; };
  const links = (k, vs, now) => vs.map((v) => `<a href="${pick(k, v)}" data-test="filter-${k}-${v || "all"}" class="${v === now ? "active" : ""}">${v || "all"}</a>`).join(" · ");
  $("#main").innerHTML = `<h1>Alerts${onPort ? ` on ${esc(onPort)} <a class="muted" href="${pick("port", "")}">(all ports)</a>` : ""}</h1>
    <p>State: ${links("state", ["", "open", "resolved"], state)}
    &nbsp; Severity: ${links("severity", ["", "low", "medium", "high", "new-port"], severity)}
    <span class="muted">— surges of distinct sources per port</span></p>
    <div class="cards"><div class="card"><div class="v" data-test="alert-count">${shown.length}</div><div class="k">alerts in range</div></div></div>
    <h2>Alerts</h2>${alertTable(shown, q)}
    <h2>Evidence <span class="muted">(distinct sources 6 h before to 2 h after each start, red line; newest ${Math.min(EVIDENCE, shown.length)})</span></h2>
    <div class="evidence">${shown.slice(0, EVIDENCE).map((a, i) => `<div><div class="muted">${esc(a.proto)}/${a.port} · ${esc(a.severity)} · ${when(a.start)} · ${fmt(a.observed)} vs ${a.baseline.toFixed(1)}</div>
      <div class="chart" id="evidence-${i}" data-test="evidence"></div><div class="muted" id="evidence-who-${i}" data-test="evidence-who"></div></div>`).join("") || `<p class="muted">no alerts in this range</p>`}</div>`;
  // The port's series around each alert, its start marked.
  await Promise.all(shown.slice(0, EVIDENCE).map(async (a, i) => {
    const t = Date.parse(a.start);
    const s = await api(`/api/v1/ports/${a.proto}/${a.port}/series?from=${iso(t - 6 * HOUR)}&to=${iso(t + 2 * HOUR)}&scope=${a.scope === "global" ? "global" : "local"}&step=600`);
    chart($(`#evidence-${i}`), s.points, "", [a.start], 160);
    // Who was behind it in its first window.
    const d = await api(`/api/v1/alerts/${a.id}`);
    const e = d.evidence;
    $(`#evidence-who-${i}`).innerHTML = `first window: ${fmt(e.sources)} sources, ${fmt(e.packets)} packets from ${e.sensors.length} sensor(s) in ${esc(e.countries.map((c) => c.country).join(", ") || "–")}; busiest: ` +
      (e.top_sources.slice(0, 3).map((x) => `<a href="#/source/${esc(x.ip)}?${q}">${esc(x.ip)}</a>`).join(", ") || "–");
  }));
}

// Alerts that get an evidence chart on the Alerts page.
const EVIDENCE = 12;

async function source(q, r, args) {
  const ip = args[0];
  let s;
  try {
    s = await api(`/api/v1/sources/${encodeURIComponent(ip)}?scope=${scopeOf(q)}`);
  } catch (e) {
    $("#main").innerHTML = `<h1>Source ${esc(ip)}</h1><p class="error" data-test="error">${esc(e.message)}</p>`;
    return;
  }
  const shown = [...new Set(s.port_hours.map((h) => h.proto + "/" + h.port))];
  $("#main").innerHTML = `<h1>Source <span data-test="source-ip">${esc(s.ip)}</span></h1>
    <div class="cards">
      <div class="card"><div class="v" data-test="source-packets">${fmt(s.packets)}</div><div class="k">packets</div></div>
      <div class="card"><div class="v" title="${esc(s.first_seen)}">${esc(when(s.first_seen))}</div><div class="k">first seen (UTC)</div></div>
      <div class="card"><div class="v" title="${esc(s.last_seen)}">${esc(when(s.last_seen))}</div><div class="k">last seen (UTC)</div></div>
      <div class="card"><div class="v" data-test="source-fingerprints">${esc(s.fingerprints.join(", ") || "none")}</div><div class="k">fingerprints</div></div>
      <div class="card"><div class="v">${esc(s.classes.join(", "))}</div><div class="k">classes</div></div>
      <div class="card"><div class="v">${esc(s.sensors.join(", "))}</div><div class="k">sensors</div></div>
    </div>
    <h2>Ports over time <span class="muted">(packets per hour to its ${shown.length} busiest ports)</span></h2><div class="chart" id="ports-chart" data-test="source-ports-chart"></div>
    <div class="grid"><div><h2>Ports</h2>${table([{ t: "port" }, { t: "packets", n: 1 }], s.ports.map((p) => [{ html: portLink(p, q) }, fmt(p.packets)]), "source-ports")}</div>
    <div><h2>Packets per day</h2>${table([{ t: "day" }, { t: "packets", n: 1 }], s.per_day.map((d) => [d.day, fmt(d.packets)]), "source-days")}</div>
    <div><h2>Feeds it appeared in <span class="muted">(infection alerts to the owner)</span></h2>${table([{ t: "subscriber" }, { t: "days", n: 1 }, { t: "first day" }, { t: "last day" }, { t: "packets", n: 1 }],
      s.feeds.map((f, i) => [{ html: esc(f.subscriber), test: i === 0 ? "source-feed" : "" }, fmt(f.days), f.first_day.slice(0, 10), f.last_day.slice(0, 10), { html: fmt(f.packets), test: i === 0 ? "source-feed-packets" : "" }]), "source-feeds")}</div></div>`;
  portsChart($("#ports-chart"), s.port_hours, shown);
}

// Packets per hour to each of a source's busiest ports, one line each.
function portsChart(el, hours, ports) {
  const xs = [...new Set(hours.map((h) => Date.parse(h.hour) / 1000))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = ports.map(() => xs.map(() => 0));
  for (const h of hours) ys[ports.indexOf(h.proto + "/" + h.port)][at.get(Date.parse(h.hour) / 1000)] += h.packets;
  el.dataset.points = String(xs.length);
  el.dataset.series = String(ports.length);
  if (!xs.length) { el.innerHTML = `<p class="muted">no port data</p>`; return; }
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
  const axis = themedAxis();
  new uPlot({
    width: Math.max(320, el.clientWidth - 12), height: 220,
    // Half an hour either side, so a single hour still shows as a point in time.
    scales: { x: { time: true, auto: false, range: [xs[0] - 1800, xs[xs.length - 1] + 1800] } },
    series: [{}, ...ports.map((p, i) => ({ label: p, stroke: palette[i % palette.length], width: 2, points: { show: xs.length < 50 } }))],
    axes: [{ ...axis }, { ...axis, label: "packets/hour" }],
  }, [xs, ...ys], el);
}

async function sensors() {
  const s = await api("/api/v1/sensors");
  const clockOff = (x) => x.clock_skew_seconds !== null && Math.abs(x.clock_skew_seconds) > s.clock_skew_warn_seconds;
  const state = (x) => {
    if (x.revoked) return ["revoked", "state-bad"];
    if (x.lag_seconds === null) return ["no data yet", "state-warn"];
    if (x.drop_rate > 0.01) return ["dropping", "state-bad"];
    if (clockOff(x)) return ["clock off", "state-warn"];
    if (x.lag_seconds > 900) return ["silent", "state-warn"];
    return ["ok", "state-ok"];
  };
  $("#main").innerHTML = `<h1>Sensors</h1>` + table(
    [{ t: "sensor" }, { t: "country" }, { t: "state" }, { t: "last summary" }, { t: "last window end" }, { t: "lag", n: 1 }, { t: "windows", n: 1 }, { t: "received/window", n: 1 }, { t: "drop rate", n: 1 }, { t: "spool evicted", n: 1 }, { t: "clock", n: 1 }],
    s.sensors.map((x) => {
      const [label, cls] = state(x);
      return [{ html: esc(x.id), test: "sensor-id" }, x.country, { html: `<span class="${cls}">${label}</span>`, test: "sensor-state" },
        when(x.last_summary_at), when(x.last_window_end), x.lag_seconds === null ? "–" : Math.round(x.lag_seconds) + " s", fmt(x.windows),
        { html: x.windows ? fmt(Math.round(x.received / x.windows)) : "–", test: "sensor-received-per-window" }, pct(x.drop_rate), fmt(x.spool_evicted),
        { html: x.clock_skew_seconds === null ? "–" : `<span class="${clockOff(x) ? "state-warn" : ""}">${x.clock_skew_seconds >= 0 ? "+" : ""}${x.clock_skew_seconds.toFixed(0)} s</span>`, test: "sensor-clock" }];
    }), "sensors");
}

// Federation: peers, their sync state, and what we exported to whom.
async function sharing(q, r) {
  const [p, audit] = await Promise.all([
    api("/api/v1/federation/peers"),
    api(`/api/v1/federation/audit?since=${r.from}`),
  ]);
  if (!p.id) {
    $("#main").innerHTML = `<h1>Sharing</h1><p class="muted" data-test="no-federation">Federation is not configured on this aggregator: see deploy/FEDERATION.md.</p>`;
    return;
  }
  const state = (x) => {
    if (!x.pulls) return ["they pull", "muted"];
    if (x.last_error) return ["error", "state-bad"];
    if (!x.last_success) return ["not yet", "state-warn"];
    if (x.lag_seconds !== null && x.lag_seconds > 3 * p.pull_interval_secs + 60) return ["lagging", "state-warn"];
    return ["ok", "state-ok"];
  };
  const policy = (e) => `${esc(e.share)} · TLP:${esc(e.tlp.toUpperCase())}${e.ports.length ? " · " + esc(e.ports.join(",")) : ""}${e.min_window_secs ? " · ≥" + e.min_window_secs + " s" : ""}`;
  const exported = audit.exports.filter((e) => e.time < r.to);
  $("#main").innerHTML = `<h1>Sharing <span class="muted">as <span data-test="federation-id">${esc(p.id)}</span></span></h1>
    <h2>Peers</h2>` + table(
    [{ t: "peer" }, { t: "state" }, { t: "we share" }, { t: "they mark" }, { t: "imported", n: 1 }, { t: "last success" }, { t: "sync lag", n: 1 }, { t: "newest data", n: 1 }, { t: "errors", n: 1 }, { t: "exports/24h", n: 1 }, { t: "addrs sent/24h", n: 1 }],
    p.peers.map((x, i) => {
      const [label, cls] = state(x);
      return [{ html: esc(x.id), test: i === 0 ? "peer-id" : "" }, { html: `<span class="${cls}" title="${esc(x.last_error)}">${label}</span>`, test: i === 0 ? "peer-state" : "" },
        { html: x.may_pull_from_us ? policy(x.export) : `<span class="muted">nothing (no token issued)</span>` }, x.their_tlp ? "TLP:" + x.their_tlp.toUpperCase() : "–", { html: fmt(x.imported), test: i === 0 ? "peer-imported" : "" },
        when(x.last_success), x.lag_seconds === null ? "–" : Math.round(x.lag_seconds) + " s", when(x.newest_window_end), fmt(x.errors), fmt(x.exports_24h), fmt(x.exported_source_rows_24h)];
    }), "peers") +
    `<h2>Exports in range <span class="muted">(audit log)</span></h2>` + table(
    [{ t: "time" }, { t: "peer" }, { t: "policy" }, { t: "TLP" }, { t: "cursor", n: 1 }, { t: "observations", n: 1 }, { t: "port rows", n: 1 }, { t: "source rows", n: 1 }],
    exported.slice(0, 200).map((e, i) => [when(e.time), { html: esc(e.peer), test: i === 0 ? "export-peer" : "" }, e.share, e.tlp, `${e.cursor_from}→${e.cursor_to}`,
      { html: fmt(e.observations), test: i === 0 ? "export-observations" : "" }, fmt(e.port_rows), fmt(e.source_rows)]), "exports");
}

async function render() {
  const { page, args, q } = parseHash();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  try {
    const r = await range(q);
    showRange(r);
    $("#scope").value = scopeOf(q);
    if (page === "port" && args.length === 2) await port(q, r, args);
    else if (page === "source" && args.length === 1) await source(q, r, args);
    else if (page === "sensors") await sensors();
    else if (page === "sharing") await sharing(q, r);
    else if (page === "alerts") await alerts(q, r);
    else await overview(q, r);
    document.body.dataset.ready = page;
  } catch (e) {
    if (e.auth) return signIn(e.message);
    $("#main").innerHTML = `<p class="error" data-test="error">${esc(e.message)}</p>`;
    document.body.dataset.ready = "error";
  }
}

$("#range-preset").addEventListener("change", (ev) => {
  const { page, args, q } = parseHash();
  q.delete("from"); q.delete("to");
  if (ev.target.value !== "custom") q.set("range", ev.target.value);
  go(page, args, q);
});
for (const id of ["#range-from", "#range-to"]) {
  $(id).addEventListener("change", () => {
    const { page, args, q } = parseHash();
    q.set("from", $("#range-from").value + ":00Z");
    q.set("to", $("#range-to").value + ":00Z");
    go(page, args, q);
  });
}
$("#scope").addEventListener("change", (ev) => {
  const { page, args, q } = parseHash();
  if (ev.target.value === "global") q.set("scope", "global");
  else q.delete("scope");
  go(page, args, q);
});
$("#lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const { q } = parseHash();
  const ip = $("#lookup-ip").value.trim();
  const p = $("#lookup-port").value.trim().split("/");
  if (ip) go("source", [ip], q);
  else if (p.length === 2) go("port", p, q);
});
// The theme follows the system's; the page says which one it drew.
const dark = matchMedia("(prefers-color-scheme: dark)");
const theme = () => { document.documentElement.dataset.theme = dark.matches ? "dark" : "light"; };
theme();
dark.addEventListener("change", () => { theme(); render(); });
window.addEventListener("hashchange", render);
render();
