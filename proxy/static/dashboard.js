// ttft-router dashboard: polls the admin API every POLL_MS and redraws in place.
// Plain browser JavaScript, no build step; charts by uPlot (uPlot.iife.min.js, MIT).
// Every value from the proxy is rendered as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const PUBLISHED_EVERY = 5; // the last 5 min / 30 min / day figures: every 5th poll (computed on ask)
const COLORS = { warm: "#2b6cb0", cold: "#c0392b", passive: "#2b6cb0", probe: "#dd8a1f",
                 censored: "#8a8f99", threshold: "#c0392b" };
const PAIR_COLORS = ["#2b6cb0", "#dd8a1f", "#1f8a4c", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
const charts = new Map(); // "model@provider" -> {hist, time}
const promptCharts = new Map(); // model -> {plot, key}: TTFT against prompt tokens
let polls = 0;
let publishedRows = new Map(); // model -> the pairs' published figures (last fetched)
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
function rate(v) { return v === null || v === undefined ? "–" : v >= 10 ? v.toFixed(0) : v.toFixed(1); }
function tput(pair, p) { return pair.throughput ? rate(pair.throughput[p]) : "–"; }
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

// What the prober plans for the pair (standby: kept warm for failover) and the newest change
// its detector found.
function planText(pair, planned) {
  const parts = [];
  if (planned) parts.push(planned.keep_warm && planned.keep_warm.is_standby ? "standby (kept warm)" : planned.reason);
  if (pair.change) parts.push(pair.change.direction + " " + new Date(pair.change.at * 1000).toLocaleTimeString() +
                              " (" + pair.change.what + ")");
  return parts.join(" · ");
}

function pairRow(pair, chosen, excluded, planned) {
  const cells = [
    [pair.provider + (pair.provider === chosen ? " ★" : ""), "l"], [pair.upstream_model, "l"],
    [pair.n], [seconds(pair.median_s)], [seconds(pair.p95_s)], [seconds(pair.tail_mean_s)],
    [pct(pair.cv)], [pct(pair.std_over_median)], [pct(pair.cold_share)], [pct(pair.error_rate)],
    [tput(pair, "p50")], [tput(pair, "p75")], [tput(pair, "p90")], [tput(pair, "p99")],
    [pair.source_mix.passive + " / " + pair.source_mix.probe],
    [pair.is_proven ? "proven" : "unproven", pair.is_proven ? "ok" : "warn"],
    [pair.band, "l"], [planText(pair, planned), "l plan"], [excluded || "", "l"],
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
      "tok/s p50", "tok/s p75", "tok/s p90", "tok/s p99",
      "passive / probe", "proven", "CV band", "prober / change", "excluded"].map((h, i) => el("th", { class: i < 2 || i > 15 ? "l" : "" }, h)));
    section = el("div", { class: "model", id: id },
      el("h2", {}, model), el("div", { class: "explain" }),
      el("table", { class: "pairs" }, el("thead", {}, head), el("tbody", {})),
      el("div", { class: "legend-note" },
        "tok/s: decode throughput, output tokens per second after the first token; p90 is the rate 90% of the answers reached. " +
        "Distribution: TTFT of the window on a log axis, warm vs cold (above the cold-start threshold, dashed). " +
        "Over time: passive (client requests) and probe samples told apart; grey: cut off before a first token."),
      el("div", { class: "published" }),
      el("div", { class: "prompt-chart" },
        el("div", { class: "chart-title" }, "TTFT against prompt tokens (estimated) per pair; lines: the fitted prefill model"),
        el("div", { class: "prompt-plot" })),
      el("div", { class: "charts" }));
    document.getElementById("models").append(section);
  }
  return section;
}

function renderModel(model, pairs, explain, plans) {
  const section = modelSection(model);
  const excluded = {};
  for (const c of explain.candidates) if (c.excluded_because) excluded[c.provider] = c.excluded_because;
  const chosen = explain.would_choose;
  section.querySelector(".explain").replaceChildren(
    el("b", {}, "chosen now: " + (chosen || "none") + (explain.is_exploration ? " (exploring)" : "") +
       (explain.incumbent ? " · incumbent " + explain.incumbent : "")),
    el("div", { class: "reason-text" }, explain.reason));
  section.querySelector("tbody").replaceChildren(...pairs.map((p) =>
    pairRow(p, chosen, excluded[p.provider], plans.get(p.model + "\u0000" + p.provider))));
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

// TTFT against prompt tokens: one point series per pair (its samples with a first token) and,
// when /admin/scores has the pair's fitted prefill model, its line base_s + s_per_token x tokens
// (dashed while the pair's own samples do not fix the slope).
function promptData(pairsSamples, scoresByProvider) {
  const pairs = pairsSamples.pairs.filter((p) => p.samples.some((s) => s.ttft_s !== null));
  // one row per sample (x may repeat: many samples share a prompt size), sorted by x
  const rows = [];
  pairs.forEach((p, i) => { for (const s of p.samples) if (s.ttft_s !== null) rows.push([s.prompt_tokens || 0, i, s.ttft_s]); });
  if (!rows.length) return null;
  rows.sort((a, b) => a[0] - b[0]);
  const x = rows.map((r) => r[0]);
  const series = [], data = [x];
  pairs.forEach((p, i) => {
    const color = PAIR_COLORS[i % PAIR_COLORS.length];
    const points = rows.map((r) => (r[1] === i ? r[2] : null));
    series.push({ label: p.provider, stroke: color, paths: () => null, points: { show: true, size: 4, space: 0, fill: color } });
    data.push(points);
    const fit = (scoresByProvider.get(p.provider) || {}).prefill;
    if (fit && typeof fit.base_s === "number" && typeof fit.s_per_token === "number") {
      series.push({ label: p.provider + " fit", stroke: color, width: 1.5, spanGaps: true,
                    dash: fit.identified === false ? [5, 4] : undefined, points: { show: false } });
      data.push(x.map((t) => fit.base_s + fit.s_per_token * t));
    }
  });
  return { series, data, key: series.map((s) => s.label).join("|") };
}

function renderPromptChart(model, pairsSamples, pairs) {
  const box = modelSection(model).querySelector(".prompt-plot");
  const made = promptData(pairsSamples, new Map(pairs.map((p) => [p.provider, p])));
  if (!made) return;
  let entry = promptCharts.get(model);
  if (entry && entry.key !== made.key) { entry.plot.destroy(); entry = null; } // the series changed
  if (entry) { entry.plot.setData(made.data); return; }
  const plot = new uPlot({
    width: chartWidth(box), height: 200, legend: { live: false },
    scales: { x: { time: false, range: (u, min, max) => [0, Math.max(max * 1.05, 1)] },
              y: { range: (u, min, max) => [0, Math.max(max * 1.1, 0.001)] } },
    axes: [{ label: "prompt tokens", labelSize: 14 }, { values: (u, ticks) => ticks.map(tick), size: 62 }],
    series: [{ label: "prompt tokens" }, ...made.series],
  }, made.data, box);
  promptCharts.set(model, { plot, key: made.key });
}

// The last 5 min / 30 min / day per pair, as OpenRouter publishes per endpoint.
function renderPublished(model) {
  const rows = publishedRows.get(model);
  const box = modelSection(model).querySelector(".published");
  if (!rows) return;
  const spans = ["5m", "30m", "1d"];
  const cell = (p, read) => spans.map((s) => read(p.published[s])).join(" / ");
  const head = el("tr", {}, ...["provider", "attempts", "uptime", "TTFT p50", "TTFT p90",
    "tok/s p50", "tok/s p90"].map((h, i) => el("th", { class: i === 0 ? "l" : "" }, h)));
  const body = rows.map((p) => el("tr", { "data-published": p.provider },
    el("td", { class: "l" }, p.provider),
    el("td", {}, cell(p, (s) => s.n_attempts)),
    el("td", {}, cell(p, (s) => s.uptime === null ? "–" : s.uptime.toFixed(1) + "%")),
    el("td", {}, cell(p, (s) => seconds(s.latency && s.latency.p50))),
    el("td", {}, cell(p, (s) => seconds(s.latency && s.latency.p90))),
    el("td", {}, cell(p, (s) => rate(s.throughput && s.throughput.p50))),
    el("td", {}, cell(p, (s) => rate(s.throughput && s.throughput.p90)))));
  box.replaceChildren(el("div", { class: "chart-title" }, "Last 5 min / 30 min / day (as OpenRouter publishes per endpoint)"),
    el("table", { class: "published-table" }, el("thead", {}, head), el("tbody", {}, ...body)));
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
    el("td", { class: "l" }, d.client || "–"),
    el("td", { class: "l " + (["failover", "hedged", "unavailable"].includes(d.verdict) ? "warn" : "") }, d.verdict || ""),
    el("td", { class: "l" }, d.choice || "–"),
    el("td", { class: "l " + (d.winner ? "" : "bad") }, d.winner || "failed"),
    el("td", { class: "l" }, attemptsText(d)),
    el("td", { class: "reason", title: d.reason }, d.reason))));
}

// -- clients ----------------------------------------------------------------------------------

function ofLimit(used, limit) {
  return limit === null || limit === undefined ? String(used) : used + " / " + limit;
}
function usd(v) { return v === null || v === undefined ? "–" : v.toFixed(v < 1 ? 4 : 2); }
function usdOf(spent, cap) { return cap === null || cap === undefined ? usd(spent) : usd(spent) + " / " + usd(cap); }

function renderClients(view) {
  const note = "counted " + (view.counted_locally ? "by this replica alone (the store did not answer, " +
    Math.round(view.fallback_share * 100) + "% of each limit)" : "by the " + view.store + " store") +
    (view.store_error ? " · store: " + view.store_error : "") +
    (view.queued_charges ? " · " + view.queued_charges + " charges queued" : "") +
    (view.reload.last_error ? " · last reload failed: " + view.reload.last_error : "");
  const noteEl = document.getElementById("clients-note");
  noteEl.textContent = note;
  noteEl.className = view.counted_locally || view.store_error || view.reload.last_error ? "warn" : "muted";
  const body = document.querySelector("#clients tbody");
  body.replaceChildren(...view.clients.map((c) => {
    const u = c.usage || {}, s = c.spend || {};
    const refused = u.refused_today == null ? "–" : String(u.refused_today);
    return el("tr", { "data-client": c.name },
      el("td", { class: "l" }, c.name),
      el("td", {}, u.requests_last_minute == null ? "–" : ofLimit(u.requests_last_minute, c.limits.requests_per_minute)),
      el("td", {}, u.tokens_last_minute == null ? "–" : ofLimit(u.tokens_last_minute, c.limits.tokens_per_minute)),
      el("td", {}, u.concurrent == null ? "–" : ofLimit(u.concurrent, c.limits.concurrent_requests)),
      el("td", {}, usdOf(s.usd_today, c.budget.usd_per_day)),
      el("td", {}, usdOf(s.usd_this_month, c.budget.usd_per_month)),
      el("td", {}, u.requests_today == null ? "–" : String(u.requests_today)),
      el("td", { class: refused !== "–" && refused !== "0" ? "warn" : "" }, refused),
      el("td", { class: "l" }, ago(c.last_seen)),
      el("td", { class: "l" }, c.models === null ? "all" : c.models.join(", ")),
      el("td", { class: "l" }, c.controls.join(", ") || "none"));
  }));
}

// -- the loop ---------------------------------------------------------------------------------

async function refresh() {
  if (optional === null) optional = (await get("/dashboard/features")).routes;
  const [status, scores, policy, decisions, clients] = await Promise.all([
    get("/admin/status"), get("/admin/scores"), get("/admin/policy"), get("/admin/decisions?limit=15"),
    get("/admin/clients")]);
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
  if (polls++ % PUBLISHED_EVERY === 0) {
    const figures = await get("/admin/scores?published=true");
    publishedRows = new Map();
    for (const p of figures.pairs) {
      if (!publishedRows.has(p.model)) publishedRows.set(p.model, []);
      publishedRows.get(p.model).push(p);
    }
  }
  const plans = new Map(((prober && prober.pairs) || []).map((p) => [p.model + "\u0000" + p.provider, p]));
  models.forEach((m, i) => {
    renderModel(m, byModel.get(m), details[i][0], plans);
    renderPublished(m);
    renderPromptChart(m, details[i][1], byModel.get(m));
    renderCharts(m, details[i][1]);
  });
  renderDecisions(decisions.decisions);
  if (clients !== null) renderClients(clients);
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
