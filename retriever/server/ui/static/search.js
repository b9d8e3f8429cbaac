// Search playground: one or two retrievers over /retrieve, pages read through /access.
// All state lives in the URL (?q=&retriever=&k=&compare=&open=&p=&chars=), so a link
// reproduces what is on screen.
"use strict";

(() => {
  const { el, api, showStatus, terms, highlight, fmt, params, setParams, busy } = UI;
  const PAGE_CHARS = 4000; // the env's default page_chars ("page k of N")
  const form = document.getElementById("search-form");
  const $ = (id) => document.getElementById(id);
  let info = null;
  let searches = 0, reads = 0; // a slow answer to an older request must not replace a newer one

  function state() {
    const p = params();
    return {
      q: p.get("q") || "",
      retriever: p.get("retriever") || "",
      k: p.get("k") || "",
      compare: p.get("compare") || "",
      open: p.get("open") || "",
      p: Math.max(1, parseInt(p.get("p") || "1", 10) || 1),
      chars: Math.max(1, parseInt(p.get("chars") || String(PAGE_CHARS), 10) || PAGE_CHARS),
    };
  }

  function fillForm(s) {
    $("q").value = s.q;
    if (info) $("retriever").value = s.retriever || info.default_retriever;
    $("k").value = s.k || (info ? info.config.default_topk : 5);
    $("compare-on").checked = Boolean(s.compare);
    if (s.compare) $("compare").value = s.compare;
    $("compare").disabled = !s.compare;
  }

  function renderColumn(column, name, docs, words, other) {
    column.replaceChildren(el("h2", { text: name }));
    if (!docs.length) column.append(el("p", { className: "empty", text: "no results" }));
    docs.forEach((item, i) => {
      const doc = item.document;
      const there = other ? other.get(doc.id) : undefined;
      const title = el("button", {
        type: "button", className: "title", text: doc.title || doc.id,
        onclick: () => openPage(doc.id, 1),
      });
      column.append(el("article", { className: there ? "hit overlap" : "hit", dataset: { id: doc.id } },
        el("div", { className: "meta" },
          el("span", { className: "rank", text: `#${i + 1}` }),
          el("span", { className: "score", text: `score ${fmt(item.score, 4)}` }),
          there ? el("span", { className: "badge", text: `in both · #${there} there` }) : null),
        title,
        doc.url ? el("div", { className: "url", text: doc.url }) : null,
        el("p", { className: "text" }, highlight(doc.text, words))));
    });
  }

  async function search(s) {
    const names = [s.retriever || info.default_retriever];
    if (s.compare) names.push(s.compare);
    const k = parseInt(s.k || info.config.default_topk, 10);
    showStatus(`searching ${names.join(" and ")}…`);
    const t0 = performance.now();
    const mine = ++searches;
    const replies = await Promise.all(names.map((name) => api("/retrieve", {
      queries: [s.q], topk: k, return_scores: true, retriever: name,
    })));
    if (mine !== searches) return;
    const ms = performance.now() - t0;
    const lists = replies.map((r) => r.result[0]);
    const ranks = lists.map((docs) => new Map(docs.map((d, i) => [d.document.id, i + 1])));
    const words = terms(s.q);
    renderColumn($("col-0"), names[0], lists[0], words, names.length > 1 ? ranks[1] : null);
    $("col-1").hidden = names.length < 2;
    if (names.length > 1) {
      renderColumn($("col-1"), names[1], lists[1], words, ranks[0]);
      const both = lists[0].filter((d) => ranks[1].has(d.document.id)).length;
      showStatus(`${lists[0].length} and ${lists[1].length} results, ${both} in both · ${fmt(ms, 0)} ms`);
    } else {
      showStatus(`${lists[0].length} results · ${fmt(ms, 0)} ms`);
    }
  }

  async function showPage(s) {
    const reader = $("reader");
    if (!s.open) {
      reads++;
      reader.hidden = true;
      return;
    }
    const offset = (s.p - 1) * s.chars;
    const mine = ++reads;
    const reply = await api("/access", { ids: [s.open], offset, max_chars: s.chars });
    if (mine !== reads) return;
    const page = reply.result[0];
    reader.hidden = false;
    if (!page) {
      $("reader-title").textContent = `no page for ${s.open}`;
      $("reader-url").textContent = "";
      $("reader-page").textContent = "";
      $("reader-text").textContent = "";
      return;
    }
    const n = Math.max(1, Math.ceil(page.total_chars / s.chars));
    $("reader-title").textContent = page.title;
    $("reader-url").textContent = page.url || "";
    $("reader-page").textContent = `Page ${s.p} of ${n}`;
    $("reader-text").replaceChildren(s.p > n ? `(the page has ${n} page(s))` : highlight(page.contents, terms(s.q)));
    $("reader-prev").disabled = s.p <= 1;
    $("reader-next").disabled = s.p >= n;
    $("reader-prev").onclick = () => openPage(s.open, s.p - 1);
    $("reader-next").onclick = () => openPage(s.open, s.p + 1);
  }

  function openPage(id, page) {
    const s = state();
    setParams({ ...s, open: id, p: page, chars: s.chars === PAGE_CHARS ? "" : s.chars });
    busy(+1);
    showPage(state())
      .catch((err) => showStatus(err.message, true))
      .finally(() => busy(-1));
  }

  async function run() {
    const s = state();
    fillForm(s);
    busy(+1);
    try {
      if (s.q.trim()) await search(s);
      else {
        $("col-0").replaceChildren();
        $("col-1").hidden = true;
        showStatus("");
      }
      await showPage(s);
    } catch (err) {
      showStatus(err.message, true);
    }
    busy(-1);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const compare = $("compare-on").checked ? $("compare").value : "";
    setParams({ q: $("q").value, retriever: $("retriever").value, k: $("k").value, compare });
    run();
  });
  $("compare-on").addEventListener("change", () => { $("compare").disabled = !$("compare-on").checked; });
  $("reader-close").addEventListener("click", () => {
    const s = state();
    setParams({ ...s, open: "", p: "", chars: s.chars === PAGE_CHARS ? "" : s.chars });
    $("reader").hidden = true;
  });
  window.addEventListener("popstate", run);

  (async () => {
    for (;;) {
      try {
        info = await api("/info");
        if (info.state === "ready") break;
        if (info.state === "failed") {
          showStatus("the index failed to load: see the server's log", true);
          return;
        }
        showStatus(`the server is ${info.state}; retrying…`);
      } catch (err) {
        showStatus(err.message, true);
        if (err.status !== 503) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    const names = Object.keys(info.retrievers).sort();
    for (const select of [$("retriever"), $("compare")]) {
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    }
    $("retriever").value = info.default_retriever;
    $("compare").value = names.find((n) => n !== info.default_retriever) || names[0];
    $("k").max = info.config.max_topk;
    await run();
    document.body.dataset.ready = "1";
  })();
})();
