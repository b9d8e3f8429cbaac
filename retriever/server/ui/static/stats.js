// Live stats from /ui/api/stats (the server's /metrics, parsed): rates and windowed percentiles
// are differences between two snapshots, drawn as tables and small canvas charts.
"use strict";

(() => {
  const { el, api, showStatus, fmt, params } = UI;
  const $ = (id) => document.getElementById(id);
  const EVERY = Math.max(0.5, parseFloat(params().get("every") || "2")) * 1000;
  const HISTORY = 90;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
  const history = { rps: new Map(), p99: new Map(), qps: new Map(), batch: new Map() };
  let previous = null;

  const key = (labels) => JSON.stringify(labels);
  const series = (snap, group, name) => (snap && snap[group] && snap[group][name]) || [];

  function sumBy(snap, group, name, label, keep) {
    const out = new Map();
    for (const s of series(snap, group, name)) {
      if (keep && !keep(s.labels)) continue;
      const id = s.labels[label] ?? "";
      out.set(id, (out.get(id) || 0) + s.value);
    }
    return out;
  }

  function histograms(snap, name, label) {
    const out = new Map();
    for (const s of series(snap, "histograms", name)) out.set(s.labels[label] ?? "", s);
    return out;
  }

  // Prometheus' histogram_quantile: linear inside the bucket that holds the rank.
  function quantile(q, buckets) {
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lowLe = 0, lowCount = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === "+Inf") return lowLe;
        return lowLe + (le - lowLe) * (rank - lowCount) / Math.max(count - lowCount, 1e-12);
      }
      lowLe = le === "+Inf" ? lowLe : le;
      lowCount = count;
    }
    return lowLe;
  }

  function delta(now, before) {
    if (!before) return now;
    const old = new Map(before.buckets.map(([le, c]) => [String(le), c]));
    return {
      buckets: now.buckets.map(([le, c]) => [le, c - (old.get(String(le)) || 0)]),
      sum: now.sum - before.sum, count: now.count - before.count,
    };
  }

  function windowed(now, before) {
    const d = delta(now, before);
    return d.count > 0 ? d : now; // idle interval: the whole run's distribution
  }

  function push(map, name, value) {
    if (!map.has(name)) map.set(name, []);
    const points = map.get(name);
    points.push(value);
    if (points.length > HISTORY) points.shift();
  }

  function draw(canvas, map) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 28;
    ctx.clearRect(0, 0, w, h);
    let top = 0;
    for (const points of map.values()) for (const v of points) if (v !== null && v > top) top = v;
    top = top > 0 ? top * 1.15 : 1;
    ctx.strokeStyle = "#d1d5db";
    ctx.fillStyle = "#6b7280";
    ctx.font = "11px sans-serif";
    for (let i = 0; i <= 2; i++) {
      const y = h - pad - (h - 2 * pad) * i / 2;
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
      ctx.fillText(fmt(top * i / 2, top < 10 ? 1 : 0), 2, y - 2);
    }
    let i = 0;
    for (const [name, points] of map) {
      const color = COLORS[i % COLORS.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      points.forEach((v, j) => {
        if (v === null) return;
        const x = pad + (w - pad - 4) * j / (HISTORY - 1);
        const y = h - pad - (h - 2 * pad) * v / top;
        if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
      ctx.fillStyle = color;
      ctx.fillText(name, pad + 6 + 110 * i, h - 8);
      i++;
    }
  }

  function row(cells) {
    return el("tr", {}, cells.map((c, i) => el("td", { className: i ? "num" : "", text: c })));
  }

  function render(snap) {
    const dt = previous ? Math.max(1e-3, snap.time - previous.time) : null;
    const rate = (now, before, id) => (dt === null ? null : ((now.get(id) || 0) - (before.get(id) || 0)) / dt);

    // endpoints
    const requests = sumBy(snap, "counters", "requests", "endpoint");
    const errors = sumBy(snap, "counters", "requests", "endpoint", (l) => !String(l.code).startsWith("2"));
    const beforeReq = sumBy(previous, "counters", "requests", "endpoint");
    const beforeErr = sumBy(previous, "counters", "requests", "endpoint", (l) => !String(l.code).startsWith("2"));
    const latency = histograms(snap, "request_seconds", "endpoint");
    const oldLatency = histograms(previous, "request_seconds", "endpoint");
    const endpoints = [...new Set([...requests.keys(), ...latency.keys()])].sort();
    $("endpoints").tBodies[0].replaceChildren(...endpoints.map((e) => {
      const hist = latency.get(e);
      const win = hist ? windowed(hist, oldLatency.get(e)) : null;
      const ms = (q) => (win ? fmt(1000 * quantile(q, win.buckets), 2) : "–");
      const r = rate(requests, beforeReq, e);
      push(history.rps, e, r);
      push(history.p99, e, win ? 1000 * quantile(0.99, win.buckets) : null);
      return row([e, fmt(r, 1), fmt(rate(errors, beforeErr, e), 2), fmt(requests.get(e) || 0), ms(0.5), ms(0.9), ms(0.99)]);
    }));

    // retrievers
    const queries = sumBy(snap, "counters", "queries", "retriever");
    const oldQueries = sumBy(previous, "counters", "queries", "retriever");
    const hits = sumBy(snap, "counters", "cache_hits", "retriever");
    const misses = sumBy(snap, "counters", "cache_misses", "retriever");
    const oldHits = sumBy(previous, "counters", "cache_hits", "retriever");
    const oldMisses = sumBy(previous, "counters", "cache_misses", "retriever");
    const rejected = sumBy(snap, "counters", "rejected", "retriever");
    const batchErrors = sumBy(snap, "counters", "batch_errors", "retriever");
    const depth = sumBy(snap, "gauges", "queue_depth", "retriever");
    const sizes = histograms(snap, "batch_size", "retriever");
    const oldSizes = histograms(previous, "batch_size", "retriever");
    const seconds = histograms(snap, "batch_seconds", "retriever");
    const oldSeconds = histograms(previous, "batch_seconds", "retriever");
    const names = [...new Set([...queries.keys(), ...sizes.keys(), ...depth.keys()])].filter((n) => n).sort();
    $("retrievers").tBodies[0].replaceChildren(...names.map((n) => {
      const size = sizes.get(n) ? windowed(sizes.get(n), oldSizes.get(n)) : null;
      const secs = seconds.get(n) ? windowed(seconds.get(n), oldSeconds.get(n)) : null;
      const batches = sizes.get(n) && dt !== null ?
        (sizes.get(n).count - (oldSizes.get(n) ? oldSizes.get(n).count : 0)) / dt : null;
      const h = (hits.get(n) || 0) - (oldHits.get(n) || 0), m = (misses.get(n) || 0) - (oldMisses.get(n) || 0);
      const allH = hits.get(n) || 0, allM = misses.get(n) || 0;
      const hitRate = h + m > 0 ? h / (h + m) : allH + allM > 0 ? allH / (allH + allM) : null;
      const q = rate(queries, oldQueries, n);
      const mean = size && size.count > 0 ? size.sum / size.count : null;
      push(history.qps, n, q);
      push(history.batch, n, mean);
      const ms = (p) => (secs ? fmt(1000 * quantile(p, secs.buckets), 2) : "–");
      return row([n, fmt(q, 1), fmt(batches, 1), fmt(mean, 1), ms(0.5), ms(0.99),
        hitRate === null ? "–" : `${fmt(100 * hitRate, 1)}%`, fmt(depth.get(n) ?? null),
        fmt(rejected.get(n) || 0), fmt(batchErrors.get(n) || 0)]);
    }));

    // workers
    const workers = Object.entries((snap.health && snap.health.retrievers) || {}).sort();
    $("workers").tBodies[0].replaceChildren(...workers.map(([name, w]) =>
      el("tr", { className: w.alive ? "" : "failed" },
        el("td", { text: name }),
        el("td", { className: w.alive ? "good" : "error", text: w.alive ? "alive" : "dead" }),
        el("td", { className: "num", text: fmt(w.queue_depth) }),
        el("td", { text: w.error || "" }))));

    // process
    const gauge = (name) => { const s = series(snap, "gauges", name); return s.length ? s[0].value : null; };
    const rss = gauge("rss_bytes");
    const facts = [["state", snap.health ? `${snap.state} (${snap.health.status})` : snap.state], ["ready", gauge("ready") === null ? "–" : gauge("ready") ? "yes" : "no"],
      ["resident memory", rss === null ? "–" : `${fmt(rss / 2 ** 20, 0)} MB`],
      ["cached results", fmt(gauge("cache_entries"))], ["refreshing every", `${EVERY / 1000} s`]];
    $("process").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));

    draw($("chart-rps"), history.rps);
    draw($("chart-p99"), history.p99);
    draw($("chart-qps"), history.qps);
    draw($("chart-batch"), history.batch);
    previous = snap;
    document.body.dataset.polls = String((parseInt(document.body.dataset.polls || "0", 10)) + 1);
  }

  async function poll() {
    try {
      render(await api("/ui/api/stats"));
      showStatus(`updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      showStatus(err.message, true);
      if (err.status === 401) return; // wait for the token form
    }
    setTimeout(poll, EVERY);
  }

  poll();
})();
