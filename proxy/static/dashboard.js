// ttft-router dashboard: polls the admin API every POLL_MS and redraws in place.
// Plain browser JavaScript, no build step; charts by uPlot (uPlot.iife.min.js, MIT).
// Every value from the proxy is rendered as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const COLORS = { warm: "#2b6cb0", cold: "#c0392b", passive: "#2b6cb0", probe: "#dd8a1f",
                 censored: "#8a8f99", threshold: "#c0392b" };
const charts = new Map(); // "model@provider" -> {hist, time}
let optional = null; // admin routes this proxy has beyond the core ones (e.g. /admin/prober)

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function seconds(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return v.toFixed(0) + " s";
  if (v >= 1) return v.toPrecision(3) + " s";
  return (v * 1000).toPrecision(3) + " ms";
}
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(0) + "%"; }
function ago(ts) {
  if (!ts) return "–";
  const s = Date.now() / 1000 - ts;
  return s < 60 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(0) + " min ago";
}

async function get(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) { window.location.assign("/dashboard"); throw new Error("signed out"); }
  if (response.status === 404) return null;
  if (!response.ok) {
    let message = response.status + "";
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + message);
  }
  return response.json();
}

function card(title, value, cls, detail) {
  return el("div", { class: "card" }, el("b", {}, title), el("span", { class: cls || "" }, value),
            detail ? el("div", { class: "muted" }, detail) : null);
}

function renderHealth(status, scores, prober) {
  const store = status.store;
  const age = status.scoreboard_age_s;
  let proberCard;
  if (prober === null) {
    proberCard = card("prober", "prober: not available", "muted");
  } else {
    const text = JSON.stringify(prober);
    proberCard = card("prober", prober.enabled === false ? "off" : "on",
                      prober.enabled === false ? "muted" : "ok",
                      text.length > 160 ? text.slice(0, 157) + "…" : text);
  }
  document.getElementById("health").replaceChildren(
    card("store", store.backend + (store.ok ? ": reachable" : ": unreachable"), store.ok ? "ok" : "bad",
         (store.detail ? store.detail + " · " : "") + store.buffered_samples + " buffered, " +
         store.dropped_samples + " samples / " + store.dropped_decisions + " decisions dropped" +
         (store.last_flush_error ? " · last flush error: " + store.last_flush_error : "")),
    card("scoreboard", age === null ? "not refreshed yet" : "refreshed " + age.toFixed(1) + " s ago",
         age === null || age > 10 ? "warn" : "ok",
         "last refresh " + (1000 * status.scoreboard_last_refresh_cpu_s).toFixed(1) + " ms CPU · " +
         scores.pairs.length + " pairs"),
    proberCard,
  );
  document.getElementById("replica").textContent = "replica " + status.replica;
}

function renderPolicy(policy) {
  const d = policy.defaults || {};
  const reload = policy.last_reload_error
    ? el("span", { class: "bad" }, "last reload failed (the last good policy stays): " + policy.last_reload_error)
    : el("span", { class: "ok" }, policy.last_reload_at ? "last reload OK " + ago(policy.last_reload_at) : "no reload since start");
  const files = (policy.sources || []).join(", ") || "built-in defaults";
  const summary = "mode " + d.mode + " · objective " + d.objective + " · min_samples " + d.min_samples +
    " · hysteresis " + pct(d.hysteresis) + " · exploration " + pct(d.exploration_share) +
    " · per-model overrides: " + (Object.keys(policy.models || {}).join(", ") || "none");
  document.getElementById("policy").replaceChildren(
    el("h2", {}, "Policy in force"), el("div", {}, summary), el("div", { class: "muted" }, "files: " + files), reload);
}

function pairRow(pair, chosen, excluded) {
  const cells = [
    [pair.provider + (pair.provider === chosen ? " ★" : ""), "l"], [pair.upstream_model, "l"],
    [pair.n], [seconds(pair.median_s)], [seconds(pair.p95_s)], [seconds(pair.tail_mean_s)],
    [pct(pair.cv)], [pct(pair.std_over_median)], [pct(pair.cold_share)], [pct(pair.error_rate)],
    [pair.source_mix.passive + " / " + pair.source_mix.probe],
    [pair.is_proven ? "proven" : "unproven", pair.is_proven ? "ok" : "warn"],
    [pair.band, "l"], [excluded || "", "l"],
  ];
  return el("tr", { class: pair.provider === chosen ? "chosen" : "", "data-pair": pair.provider },
            ...cells.map(([v, cls]) => el("td", { class: cls || "" }, v)));
}

function modelSection(model) {
  const id = "model-" + model.replace(/[^A-Za-z0-9_-]/g, "_");
  let section = document.getElementById(id);
  if (!section) {
    const head = el("tr", {}, ...["provider", "provider's model", "n", "median", "p95",
      "tail mean (slowest 5%)", "CV (std/mean)", "std/median", "cold share", "errors",
      "passive / probe", "proven", "CV band", "excluded"].map((h, i) => el("th", { class: i < 2 || i > 11 ? "l" : "" }, h)));
    section = el("div", { class: "model", id: id },
      el("h2", {}, model), el("div", { class: "explain" }),
      el("table", { class: "pairs" }, el("thead", {}, head), el("tbody", {})),
      el("div", { class: "legend-note" },
        "Distribution: TTFT of the window on a log axis, warm vs cold (above the cold-start threshold, dashed). " +
        "Over time: passive (client requests) and probe samples told apart; grey: cut off before a first token."),
      el("div", { class: "charts" }));
    document.getElementById("models").append(section);
  }
  return section;
}

function renderModel(model, pairs, explain) {
  const section = modelSection(model);
  const excluded = {};
  for (const c of explain.candidates) if (c.excluded_because) excluded[c.provider] = c.excluded_because;
  const chosen = explain.would_choose;
  section.querySelector(".explain").replaceChildren(
    el("b", {}, "chosen now: " + (chosen || "none") + (explain.is_exploration ? " (exploring)" : "") +
       (explain.incumbent ? " · incumbent " + explain.incumbent : "")),
    el("div", { class: "reason-text" }, explain.reason));
  section.querySelector("tbody").replaceChildren(...pairs.map((p) => pairRow(p, chosen, excluded[p.provider])));
}

// -- charts ----------------------------------------------------------------------------------

const BINS = 24;

function histogram(samples, threshold) {
  const times = samples.map((s) => s.ttft_s).filter((t) => t !== null && t > 0);
  if (!times.length) return null;
  let lo = Math.log10(Math.min(...times)), hi = Math.log10(Math.max(...times));
  if (hi - lo < 0.3) { lo -= 0.15; hi += 0.15; }
  const width = (hi - lo) / BINS;
  const centers = [], warm = new Array(BINS).fill(0), cold = new Array(BINS).fill(0);
  for (let i = 0; i < BINS; i++) centers.push(Math.pow(10, lo + (i + 0.5) * width));
  for (const t of times) {
    const i = Math.min(BINS - 1, Math.max(0, Math.floor((Math.log10(t) - lo) / width)));
    if (threshold !== null && t > threshold) cold[i]++; else warm[i]++;
  }
  return [centers, warm.map((v) => v || null), cold.map((v) => v || null)];
}

function series(samples, threshold) {
  const sorted = samples.slice().sort((a, b) => a.t - b.t);
  const x = [], passive = [], probe = [], censored = [], line = [];
  for (const s of sorted) {
    x.push(s.t);
    const value = s.ttft_s;
    passive.push(value !== null && s.source !== "probe" ? value : null);
    probe.push(value !== null && s.source === "probe" ? value : null);
    censored.push(value === null && s.censored_at_s ? s.censored_at_s : null);
    line.push(threshold);
  }
  return [x, passive, probe, censored, line];
}

// Axis labels: 5 ms, 40 ms, 1.5 s, 30 s (uPlot's log ticks are 1-2-5 or 1..9 per decade).
function tick(v) {
  if (v === null || v === undefined) return "";
  return v < 1 ? +(v * 1000).toPrecision(2) + " ms" : +v.toPrecision(2) + " s";
}
function logTicks(u, ticks) {
  // label only 1, 2 and 5 of each decade: the others stay as grid lines
  return ticks.map((v) => { const m = v / Math.pow(10, Math.floor(Math.log10(v) + 1e-9));
    return [1, 2, 5].some((k) => Math.abs(m - k) < 1e-6) ? tick(v) : ""; });
}

function chartWidth(box) { return Math.max(280, box.clientWidth - 16); }

function makeHist(box, data) {
  const bars = uPlot.paths.bars({ size: [0.9, 40] });
  return new uPlot({
    width: chartWidth(box), height: 140, legend: { live: false },
    scales: { x: { time: false, distr: 3, log: 10 }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{ values: logTicks, space: 30 }, { size: 36, label: "samples", labelSize: 14 }],
    series: [{ label: "TTFT" },
      { label: "warm", fill: COLORS.warm + "cc", stroke: COLORS.warm, paths: bars, points: { show: false } },
      { label: "cold", fill: COLORS.cold + "cc", stroke: COLORS.cold, paths: bars, points: { show: false } }],
  }, data, box);
}

function makeTime(box, data) {
  const dots = { show: true, size: 5, space: 0 };
  return new uPlot({
    width: chartWidth(box), height: 150, legend: { live: false },
    scales: { y: { distr: 3, log: 10 } },
    axes: [{}, { values: logTicks, size: 62 }],
    series: [{},
      { label: "passive", stroke: COLORS.passive, paths: () => null, points: { ...dots, fill: COLORS.passive } },
      { label: "probe", stroke: COLORS.probe, paths: () => null, points: { ...dots, fill: COLORS.probe } },
      { label: "cut off", stroke: COLORS.censored, paths: () => null, points: { ...dots, fill: COLORS.censored } },
      { label: "cold threshold", stroke: COLORS.threshold, dash: [4, 4], width: 1, points: { show: false } }],
  }, data, box);
}

function renderCharts(model, pairsSamples) {
  const section = modelSection(model);
  const grid = section.querySelector(".charts");
  for (const p of pairsSamples.pairs) {
    const key = model + "@" + p.provider;
    let entry = charts.get(key);
    if (!entry) {
      const holder = el("div", { class: "pair", "data-pair": p.provider },
        el("h3", {}, p.provider, el("span", {}, "")),
        el("div", { class: "chart-title" }, "TTFT distribution (log axis): warm / cold"), el("div", { class: "hist" }),
        el("div", { class: "chart-title" }, "TTFT over time (log axis): passive / probe"), el("div", { class: "time" }));
      grid.append(holder);
      entry = { holder, hist: null, time: null };
      charts.set(key, entry);
    }
    const threshold = p.cold_threshold_s;
    entry.holder.querySelector("h3 span").textContent = " · " + p.samples.length + " samples" +
      (threshold ? " · cold above " + seconds(threshold) : "");
    const hist = histogram(p.samples, threshold);
    const time = series(p.samples, threshold);
    if (hist) {
      if (entry.hist) entry.hist.setData(hist); else entry.hist = makeHist(entry.holder.querySelector(".hist"), hist);
    }
    if (time[0].length) {
      if (entry.time) entry.time.setData(time); else entry.time = makeTime(entry.holder.querySelector(".time"), time);
    }
  }
}

// -- decisions --------------------------------------------------------------------------------

function attemptsText(d) {
  const hedge = d.hedge && d.hedge.fired ? " (hedge after " + seconds(d.hedge.after_s) + ")"
    : d.hedge && d.hedge.skipped ? " (hedge skipped: " + d.hedge.skipped + ")" : "";
  return d.attempts.map((a) => (a.hedge ? "hedge " : "") + a.provider + ": " + a.outcome +
    (a.ttft_s !== null ? " " + seconds(a.ttft_s) : "") + (a.status ? " (" + a.status + ")" : "")).join(" → ") + hedge || "none";
}

function renderDecisions(rows) {
  const body = document.querySelector("#decisions tbody");
  body.replaceChildren(...rows.map((d) => el("tr", { "data-request-id": d.request_id || "" },
    el("td", { class: "l" }, new Date(d.timestamp * 1000).toLocaleTimeString()),
    el("td", { class: "l rid" }, d.request_id || d.id),
    el("td", { class: "l" }, d.model),
    el("td", { class: "l " + (["failover", "hedged", "unavailable"].includes(d.verdict) ? "warn" : "") }, d.verdict || ""),
    el("td", { class: "l" }, d.choice || "–"),
    el("td", { class: "l " + (d.winner ? "" : "bad") }, d.winner || "failed"),
    el("td", { class: "l" }, attemptsText(d)),
    el("td", { class: "reason", title: d.reason }, d.reason))));
}

// -- the loop ---------------------------------------------------------------------------------

async function refresh() {
  if (optional === null) optional = (await get("/dashboard/features")).routes;
  const [status, scores, policy, decisions] = await Promise.all([
    get("/admin/status"), get("/admin/scores"), get("/admin/policy"), get("/admin/decisions?limit=15")]);
  const prober = optional.includes("/admin/prober") ? await get("/admin/prober") : null;
  renderHealth(status, scores, prober);
  renderPolicy(policy);
  const byModel = new Map();
  for (const p of scores.pairs) {
    if (!byModel.has(p.model)) byModel.set(p.model, []);
    byModel.get(p.model).push(p);
  }
  const models = [...byModel.keys()];
  const details = await Promise.all(models.map((m) => Promise.all([
    get("/admin/explain?model=" + encodeURIComponent(m)),
    get("/admin/samples?limit=400&model=" + encodeURIComponent(m))])));
  models.forEach((m, i) => {
    renderModel(m, byModel.get(m), details[i][0]);
    renderCharts(m, details[i][1]);
  });
  renderDecisions(decisions.decisions);
  const updated = document.getElementById("updated");
  updated.textContent = "updated " + new Date().toLocaleTimeString() + " (every " + POLL_MS / 1000 + " s)";
  updated.className = "muted";
}

async function loop() {
  try {
    await refresh();
  } catch (err) {
    const updated = document.getElementById("updated");
    updated.textContent = "refresh failed: " + err.message + " (retrying)";
    updated.className = "bad";
  }
  setTimeout(loop, POLL_MS);
}

loop();
