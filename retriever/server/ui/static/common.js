// Shared by the /ui pages: the API call (with the bearer token), DOM building and highlighting.
// Untrusted text (corpus, trajectories) only ever goes in through text nodes / textContent.
"use strict";

const UI = (() => {
  const TOKEN_KEY = "retriever-ui-token";

  // A token can arrive as /ui#token=... (the fragment never reaches the server or its logs).
  const hash = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (hash) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(hash[1]));
    history.replaceState(history.state, "", location.pathname + location.search);
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function askToken(message) {
    const form = document.getElementById("token-form");
    if (!form) return;
    form.hidden = false;
    document.getElementById("token-message").textContent = message;
    form.onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
      location.reload();
    };
  }

  async function api(path, body) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const init = { headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = { detail: `${response.status} ${response.statusText} (not JSON)` };
    }
    if (response.status === 401) {
      askToken(token ? "The token was refused; enter the server's token." :
        "This server needs its token (--token).");
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && (data.detail || data.error)) || response.statusText);
    }
    return data;
  }

  function showStatus(message, isError) {
    const node = document.getElementById("status");
    if (!node) return;
    node.textContent = message || "";
    node.className = isError ? "status error" : "status";
  }

  const STOP = new Set(("a an and are as at be by did do does for from had has have he her his how " +
    "in is it its of on or she that the their there they this to was were what when where which " +
    "who whom whose why will with").split(" "));

  function terms(query) {
    const words = (query || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
    return [...new Set(words.filter((w) => w.length > 1 && !STOP.has(w)))];
  }

  // Text with the query's terms in <mark>: built from text nodes, so markup in it stays text.
  function highlight(text, words) {
    const fragment = document.createDocumentFragment();
    text = String(text ?? "");
    if (!words.length) {
      fragment.append(document.createTextNode(text));
      return fragment;
    }
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${escaped.join("|")})(?![\\p{L}\\p{N}])`, "giu");
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) fragment.append(document.createTextNode(text.slice(last, match.index)));
      fragment.append(el("mark", { text: match[0] }));
      last = match.index + match[0].length;
    }
    if (last < text.length) fragment.append(document.createTextNode(text.slice(last)));
    return fragment;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) && digits === undefined ? String(value) : value.toFixed(digits ?? 3);
  }

  function params() {
    return new URLSearchParams(location.search);
  }

  function setParams(values, replace) {
    const p = new URLSearchParams();
    for (const [key, value] of Object.entries(values)) {
      if (value !== undefined && value !== null && value !== "" && value !== false) p.set(key, value);
    }
    const url = location.pathname + (p.toString() ? "?" + p : "");
    if (url === location.pathname + location.search) return;
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }

  // <body data-busy="1"> while any view update is in flight (the browser tests wait on it)
  let pending = 0;
  function busy(delta) {
    pending = Math.max(0, pending + delta);
    document.body.dataset.busy = pending ? "1" : "0";
  }

  return { ApiError, el, api, showStatus, terms, highlight, fmt, params, setParams, busy };
})();
