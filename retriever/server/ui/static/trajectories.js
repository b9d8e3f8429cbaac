// Trajectory viewer: env.evaluate's trajectories.jsonl, paged by the server (/ui/api/trajectories).
// State in the URL: ?file=&sort=&desc=&failed=&dataset=&q=&offset= for the table and
// ?file=&episode=LINE&v=DIGEST for one episode: v is the digest of the line the link was made
// from, so a file rewritten since (an evaluation rerun into the same --out) answers "now holds
// another episode" instead of showing a different one.
"use strict";

(() => {
  const { el, api, showStatus, fmt, params, setParams, busy } = UI;
  const $ = (id) => document.getElementById(id);
  const LIMIT = 50;
  let files = [];
  let retry = null;
  let runs = 0; // answers to an older view must not replace a newer one

  function state() {
    const p = params();
    return {
      file: p.get("file") || "0",
      sort: p.get("sort") || "line",
      desc: p.get("desc") || "",
      failed: p.get("failed") || "",
      dataset: p.get("dataset") || "",
      q: p.get("q") || "",
      offset: Math.max(0, parseInt(p.get("offset") || "0", 10) || 0),
      episode: p.get("episode") || "",
      v: p.get("v") || "",
    };
  }

  function go(changes) {
    setParams({ ...state(), ...changes });
    run();
  }

  function fillDatasets(s) {
    const meta = files.find((f) => String(f.id) === s.file);
    const datasets = meta ? meta.datasets : [];
    $("dataset").replaceChildren(el("option", { value: "", text: "all" }),
      ...datasets.map((d) => el("option", { value: d, text: d })));
    $("dataset").value = s.dataset;
  }

  function fillForm(s) {
    $("file").value = s.file;
    fillDatasets(s);
    $("failed").checked = s.failed === "1";
    $("q").value = s.q;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.className = th.dataset.sort === s.sort ? (s.desc === "1" ? "sorted desc" : "sorted asc") : "";
    }
  }

  function reward(value) {
    return el("td", { className: value >= 1 ? "num good" : "num", text: fmt(value, 2) });
  }

  async function showTable(s, mine) {
    const q = new URLSearchParams({ sort: s.sort, offset: s.offset, limit: LIMIT });
    if (s.desc) q.set("desc", s.desc);
    if (s.failed) q.set("failed", s.failed);
    if (s.dataset) q.set("dataset", s.dataset);
    if (s.q) q.set("q", s.q);
    const page = await api(`/ui/api/trajectories/${encodeURIComponent(s.file)}?${q}`);
    if (mine !== runs) return;
    const meta = files.find((f) => String(f.id) === s.file);
    if (meta && meta.datasets.join("\n") !== page.datasets.join("\n")) {
      meta.datasets = page.datasets; // the file grew, or was still indexing at first listing
      fillDatasets(s);
    }
    const rows = page.rows.map((r) => {
      const link = `?file=${encodeURIComponent(s.file)}&episode=${r.line}&v=${encodeURIComponent(r.v)}`;
      const open = (event) => {
        event.preventDefault();
        go({ episode: String(r.line), v: r.v });
      };
      return el("tr", { className: r.failed ? "failed" : "", dataset: { line: r.line } },
        el("td", { className: "num" }, el("a", { href: link, onclick: open, text: r.line })),
        el("td", { text: r.dataset }),
        el("td", {}, el("a", { href: link, onclick: open, className: "question", text: r.question })),
        el("td", { text: r.answers.join(" | ") }),
        el("td", { text: r.prediction ?? (r.policy_error ? "policy error" : "—") }),
        reward(r.em), reward(r.f1), reward(r.format),
        el("td", { className: "num", text: r.turns }),
        el("td", { className: "num", text: r.searches }),
        el("td", { className: "num", text: r.accesses }));
    });
    document.querySelector("#episodes tbody").replaceChildren(...rows);
    const end = s.offset + page.rows.length;
    $("range").textContent = page.total ? `rows ${s.offset + 1}–${end} of ${page.total}` : "no episodes match";
    $("prev").disabled = s.offset <= 0;
    $("next").disabled = end >= page.total;
    let note = `${page.name}: ${page.episodes} episodes`;
    if (page.bad_lines) note += ` · ${page.bad_lines} line(s) are not JSON objects (first: ${page.first_bad_lines.join(", ")})`;
    showStatus(note, page.bad_lines > 0);
  }

  function turnItem(turn, isLast, record) {
    const call = turn.kind === "search" || turn.kind === "access" ?
      `${turn.kind}(${JSON.stringify(turn.arg)})` : turn.kind === "answer" ?
        `answer(${JSON.stringify(turn.arg)})` : `${turn.kind}${turn.reason ? ` (${turn.reason})` : ""}`;
    let rewardText = "0";
    if (turn.reward !== undefined) rewardText = fmt(turn.reward, 3);
    else if (turn.kind === "invalid") rewardText = "format penalty";
    if (isLast) {
      const r = record.rewards || {};
      rewardText = Object.entries(r).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(" · ") || rewardText;
    }
    return el("li", { className: `turn ${turn.kind}` },
      el("div", { className: "turn-head" },
        el("span", { className: "rank", text: `turn ${turn.turn ?? ""}` }),
        el("code", { className: "call", text: call }),
        el("span", { className: "reward", text: `reward: ${rewardText}` })),
      turn.error ? el("div", { className: "error", text: `error: ${turn.error}` }) : null,
      el("div", { className: "label", text: "action" }),
      el("pre", { className: "action", text: turn.action ?? "" }),
      turn.observation ? el("div", { className: "label", text: "observation (as the policy saw it)" }) : null,
      turn.observation ? el("pre", { className: "observation", text: turn.observation }) : null);
  }

  async function showEpisode(s, mine) {
    const v = s.v ? `?v=${encodeURIComponent(s.v)}` : "";
    const reply = await api(`/ui/api/trajectories/${encodeURIComponent(s.file)}/${encodeURIComponent(s.episode)}${v}`);
    if (mine !== runs) return;
    const rec = reply.record;
    $("ep-question").textContent = rec.question ?? "";
    const facts = [
      ["file", `${reply.name}, line ${reply.line}`],
      ["dataset", rec.dataset], ["task", rec.task_id], ["sample", rec.sample], ["style", rec.style],
      ["gold answers", (rec.answers || []).join(" | ")],
      ["prediction", rec.prediction ?? "—"],
      ["rewards", Object.entries(rec.rewards || {}).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(" · ")],
      ["counts", Object.entries(rec.counts || {}).map(([k, v]) => `${k} ${v}`).join(" · ")],
      ["turns", rec.num_turns],
      ["ended", rec.terminated ? "answered" : rec.truncated ? `truncated (${rec.truncated_reason})` : "—"],
      ["policy error", rec.policy_error],
      ["judge", rec.judge === undefined ? undefined : String(rec.judge)],
    ];
    $("ep-facts").replaceChildren(...facts.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    $("ep-prompt").textContent = rec.prompt ?? "";
    const turns = Array.isArray(rec.turns) ? rec.turns : [];
    $("ep-turns").replaceChildren(...turns.map((t, i) => turnItem(t, i === turns.length - 1, rec)));
    showStatus("");
  }

  async function run() {
    const s = state();
    const mine = ++runs;
    fillForm(s);
    busy(+1);
    try {
      $("episode").hidden = !s.episode;
      $("table-view").hidden = Boolean(s.episode);
      if (!files.length) showStatus("no trajectory files: start the server with --trajectories FILE", true);
      else if (s.episode) await showEpisode(s, mine);
      else await showTable(s, mine);
    } catch (err) {
      if (mine === runs && err.status === 503) { // a large file is being indexed: ask again
        showStatus(err.message);
        retryLater();
      } else if (mine === runs) {
        showStatus(err.message, true);
      }
    }
    busy(-1);
  }

  function retryLater() {
    if (retry === null) busy(+1); // still busy while waiting to ask again
    clearTimeout(retry);
    retry = setTimeout(() => {
      retry = null;
      busy(-1);
      run();
    }, 1000);
  }

  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    go({
      file: $("file").value, dataset: $("dataset").value, failed: $("failed").checked ? "1" : "",
      q: $("q").value, offset: 0, episode: "", v: "",
    });
  });
  $("file").addEventListener("change", () => go({ file: $("file").value, dataset: "", offset: 0, episode: "", v: "" }));
  $("dataset").addEventListener("change", () => go({ dataset: $("dataset").value, offset: 0 }));
  $("failed").addEventListener("change", () => go({ failed: $("failed").checked ? "1" : "", offset: 0 }));
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const s = state();
      const same = s.sort === th.dataset.sort;
      go({ sort: th.dataset.sort, desc: same && s.desc !== "1" ? "1" : "", offset: 0 });
    });
  }
  $("prev").addEventListener("click", () => go({ offset: Math.max(0, state().offset - LIMIT) }));
  $("next").addEventListener("click", () => go({ offset: state().offset + LIMIT }));
  $("back").addEventListener("click", (event) => {
    event.preventDefault();
    go({ episode: "", v: "" });
  });
  window.addEventListener("popstate", run);

  (async () => {
    try {
      files = (await api("/ui/api/trajectories")).files;
    } catch (err) {
      showStatus(err.message, true);
      return;
    }
    $("file").replaceChildren(...files.map((f) => el("option", { value: String(f.id), text: f.name })));
    await run();
    document.body.dataset.ready = "1";
  })();
})();
