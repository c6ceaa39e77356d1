// rlhfkit labeling page. Data goes into the page as text (textContent), never as HTML.
"use strict";

const FLAG_KEYS = { F: "instruction", H: "harmful", M: "made_up" };
const LETTERS = "abcdefghi";
let state = null; // {item, csrf, flags, likertRange, order: [], likert: {}, flagged: {}, active, shownAt}
let busy = false;

function $(id) { return document.getElementById(id); }
function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function promptText(prompt) {
  if (typeof prompt === "string") return prompt;
  return prompt.map((m) => (prompt.length === 1 ? m.content : `${m.role}: ${m.content}`)).join("\n\n");
}

function showProgress(p) {
  $("who").textContent = state ? state.labeler : "";
  $("progress-bar").max = Math.max(1, p.labels_needed);
  $("progress-bar").value = p.labels;
  $("progress-text").textContent = `you: ${p.mine} labeled · all: ${p.labels} / ${p.labels_needed} labels`;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function loadNext() {
  const r = await fetch("/api/next", { credentials: "same-origin" });
  if (r.status === 401) { window.location = "/"; return; }
  const data = await r.json();
  state = { labeler: data.labeler, csrf: data.csrf, flags: data.flags, likertRange: data.likert,
            item: data.item, order: [], likert: {}, flagged: {}, active: null, shownAt: Date.now() };
  showProgress(data.progress);
  if (!data.item) { $("task").hidden = true; $("done").hidden = false; return; }
  $("done").hidden = true;
  $("task").hidden = false;
  $("prompt").textContent = promptText(data.item.prompt);
  const box = $("responses");
  box.replaceChildren();
  data.item.responses.forEach((resp, pos) => box.appendChild(card(resp, pos)));
  render();
  window.scrollTo(0, 0);
}

function card(resp, pos) {
  const i = resp.index;
  state.flagged[i] = new Set();
  const node = el("article", { class: "card", "data-index": i, "data-letter": LETTERS[pos].toUpperCase(),
                               "data-testid": `response-${LETTERS[pos]}`, tabindex: "0" });
  const head = el("header");
  head.append(el("span", { class: "letter" }, LETTERS[pos].toUpperCase()), el("span", { class: "rank-badge" }));
  const rank = el("button", { type: "button", class: "rank-btn" }, "Rank next");
  rank.addEventListener("click", (e) => { e.stopPropagation(); rankNext(i); });
  head.append(rank);
  node.append(head, el("pre", { class: "text" }, resp.text));
  const likert = el("div", { class: "likert", role: "group", "aria-label": "quality 1 to 7" });
  likert.append(el("span", {}, "Quality, 1 (terrible) to 7 (excellent)"));
  const [lo, hi] = state.likertRange;
  for (let v = lo; v <= hi; v++) {
    const b = el("button", { type: "button", "data-value": v, "aria-pressed": "false" }, String(v));
    b.addEventListener("click", (e) => { e.stopPropagation(); state.active = i; state.likert[i] = v; render(); });
    likert.append(b);
  }
  node.append(likert);
  const flags = el("div", { class: "flags" });
  for (const [key, label] of Object.entries(state.flags)) {
    const box = el("input", { type: "checkbox", "data-flag": key });
    box.addEventListener("change", () => { state.active = i; toggleFlag(i, key, box.checked); });
    const lab = el("label");
    lab.append(box, document.createTextNode(" " + label));
    flags.append(lab);
  }
  node.append(flags);
  node.addEventListener("click", (e) => {
    // controls handle their own clicks; re-rendering here would undo a checkbox mid-click
    if (e.target.closest("input, label, button")) return;
    state.active = i;
    render();
  });
  return node;
}

function rankNext(i) {
  if (!state.order.includes(i)) state.order.push(i);
  state.active = i;
  render();
}

function toggleFlag(i, key, on) {
  if (on) state.flagged[i].add(key); else state.flagged[i].delete(key);
  render();
}

function letterOf(i) {
  return document.querySelector(`.card[data-index="${i}"]`).dataset.letter;
}

function complete() {
  const k = state.item.responses.length;
  return state.order.length === k && state.item.responses.every((r) => state.likert[r.index] !== undefined);
}

function render() {
  const list = $("ranking");
  list.replaceChildren();
  state.order.forEach((i, rank) => {
    const li = el("li", { draggable: "true", "data-index": i }, letterOf(i));
    li.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", String(rank)));
    li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("drop-target"); });
    li.addEventListener("dragleave", () => li.classList.remove("drop-target"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = Number(e.dataTransfer.getData("text/plain"));
      const [moved] = state.order.splice(from, 1);
      state.order.splice(rank, 0, moved);
      render();
    });
    list.append(li);
  });
  for (const node of document.querySelectorAll(".card")) {
    const i = Number(node.dataset.index);
    const rank = state.order.indexOf(i);
    node.querySelector(".rank-badge").textContent = rank >= 0 ? `#${rank + 1}` : "";
    node.classList.toggle("ranked", rank >= 0);
    node.classList.toggle("active", state.active === i);
    node.querySelector(".rank-btn").disabled = rank >= 0;
    for (const b of node.querySelectorAll(".likert button")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.value) === state.likert[i]));
    }
    for (const box of node.querySelectorAll("input[data-flag]")) box.checked = state.flagged[i].has(box.dataset.flag);
  }
  $("submit").disabled = busy || !complete();
}

async function submit() {
  if (busy || !complete()) return;
  busy = true;
  render();
  setStatus("Saving…");
  const item = state.item;
  const payload = {
    item_id: item.id,
    order: state.order,
    likert: item.responses.map((_, i) => state.likert[i]),
    flags: item.responses.map((_, i) => [...state.flagged[i]]),
    seconds: (Date.now() - state.shownAt) / 1000,
  };
  try {
    const r = await fetch("/api/submit", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf },
      body: JSON.stringify(payload),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || `server answered ${r.status}`);
    setStatus("Saved.");
    busy = false;
    await loadNext();
  } catch (err) {
    busy = false;
    // The answers stay on the page: nothing advances until the server has committed them.
    setStatus(`Not saved (${err.message}); your answers are kept, press Submit again.`, true);
    render();
  }
}

function onKey(e) {
  if (!state || !state.item || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = state.item.responses.length;
  if (e.key === "Enter") { e.preventDefault(); submit(); return; }
  if (e.key === "Backspace") { e.preventDefault(); state.order.pop(); render(); return; }
  if (e.shiftKey && FLAG_KEYS[e.key] && state.active !== null) {
    const key = FLAG_KEYS[e.key];
    toggleFlag(state.active, key, !state.flagged[state.active].has(key));
    return;
  }
  const pos = LETTERS.indexOf(e.key);
  if (!e.shiftKey && pos >= 0 && pos < k) {
    const i = state.item.responses[pos].index;
    if (state.order.includes(i)) { state.active = i; render(); } else rankNext(i);
    return;
  }
  const [lo, hi] = state.likertRange;
  const v = Number(e.key);
  if (Number.isInteger(v) && v >= lo && v <= hi && state.active !== null) { state.likert[state.active] = v; render(); }
}

async function progressPage() {
  const r = await fetch("/api/progress", { credentials: "same-origin" });
  if (r.status === 401) { window.location = "/"; return; }
  const p = await r.json();
  $("summary").textContent = `${p.labels} of ${p.labels_needed} labels (${p.items} items, ${p.labels_per_item} ` +
    `labeler(s) each); ${p.items_complete} items complete.`;
  $("progress-bar").max = Math.max(1, p.labels_needed);
  $("progress-bar").value = p.labels;
  const body = $("labelers");
  body.replaceChildren();
  for (const [name, n] of Object.entries(p.labelers)) {
    const tr = el("tr");
    tr.append(el("td", {}, name), el("td", {}, String(n)));
    body.append(tr);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "progress") { progressPage(); return; }
  $("undo").addEventListener("click", () => { state.order.pop(); render(); });
  $("reset").addEventListener("click", () => { state.order = []; render(); });
  $("submit").addEventListener("click", submit);
  document.addEventListener("keydown", onKey);
  loadNext();
});
