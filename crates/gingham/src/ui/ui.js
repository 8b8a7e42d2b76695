// The web view of `gingham ui`: a thin view of the JSON endpoints (/api/matrix, /api/explain,
// /api/lint, /api/flows). Every value is put in the page as text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const FLOWS_EVERY_MS = 1000;
const LINT_EVERY_MS = 5000;
// The matrix is asked for again this often: policy changes show without a reload.
const MATRIX_EVERY_MS = 2000;
const MAX_FLOW_ROWS = 500;

let matrices = [];
// The answer the matrix shows (to redraw only on a change), and the clicked cell.
let shownMatrix = "";
let selected = null;

async function getJson(url) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new Error("the server does not answer (" + e.message + ")");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || response.status + " " + response.statusText);
  }
  return body;
}

function showError(id, e) {
  const p = $(id);
  if (e) {
    p.textContent = e.message;
    p.hidden = false;
  } else {
    p.textContent = "";
    p.hidden = true;
  }
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function setStatus() {
  const errors = ["matrix-error", "lint-error", "flows-error"].filter((id) => !$(id).hidden);
  $("status").textContent = errors.length
    ? "problems: see the messages below"
    : "updated " + new Date().toLocaleTimeString();
}

function matrixTitle(m) {
  return m.port === null || m.port === undefined ? m.protocol : m.protocol + "/" + m.port;
}

// Answers to older requests (the user chose again meanwhile) are dropped.
let matrixRequest = 0;

// `poll`: the same question again; the page changes only if the answer did.
// (A poll asks the question last asked, not what the form holds while someone edits it.)
let lastQuery = "";

async function loadMatrix(poll) {
  const request = ++matrixRequest;
  if (poll !== true) {
    const params = new URLSearchParams();
    params.set("protocol", $("protocol").value);
    if ($("port").value) params.set("port", $("port").value);
    if ($("namespace").value) params.set("namespace", $("namespace").value);
    lastQuery = params.toString();
  }
  try {
    const data = await getJson("/api/matrix?" + lastQuery);
    if (request !== matrixRequest) return;
    showError("matrix-error", null);
    const text = JSON.stringify(data);
    if (poll === true && text === shownMatrix) {
      setStatus();
      return;
    }
    shownMatrix = text;
    matrices = data.matrices;
    const ns = $("namespace");
    const chosen = ns.value;
    ns.replaceChildren(el("option", "all"));
    ns.firstChild.value = "";
    for (const n of data.namespaces) {
      const o = el("option", n);
      o.value = n;
      ns.appendChild(o);
    }
    ns.value = chosen;
    const which = $("which");
    const shown = which.value;
    which.replaceChildren();
    matrices.forEach((m, i) => {
      const o = el("option", matrixTitle(m));
      o.value = String(i);
      which.appendChild(o);
    });
    if (poll === true && shown !== "" && Number(shown) < matrices.length) which.value = shown;
    const w = $("matrix-warnings");
    w.textContent = data.warnings.join("\n");
    w.hidden = data.warnings.length === 0;
    renderMatrix();
    // The clicked cell's explanation follows the new policy.
    if (poll === true && selected) reselect();
  } catch (e) {
    if (request !== matrixRequest) return;
    shownMatrix = "";
    matrices = [];
    $("which").replaceChildren();
    $("matrix").replaceChildren();
    showError("matrix-error", e);
  }
  setStatus();
}

function renderMatrix() {
  const table = $("matrix");
  table.replaceChildren();
  const m = matrices[Number($("which").value) || 0];
  if (!m) return;
  const thead = el("thead");
  const head = el("tr");
  head.appendChild(el("th", "from \\ to " + matrixTitle(m)));
  for (const to of m.endpoints) head.appendChild(el("th", to));
  thead.appendChild(head);
  table.appendChild(thead);
  const tbody = el("tbody");
  for (const from of m.endpoints) {
    const tr = el("tr");
    tr.appendChild(el("th", from));
    for (const to of m.endpoints) {
      const ok = m.allowed[from][to];
      tr.appendChild(el("td", ok ? "✓" : "✗", ok ? "allowed" : "denied"));
    }
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
}

// One listener for every cell (a matrix at the cap has 90,000): the cell's row and column
// name the flow.
function matrixClicked(ev) {
  const td = ev.target.closest("#matrix td");
  const m = matrices[Number($("which").value) || 0];
  if (!td || !m) return;
  const from = m.endpoints[td.parentElement.sectionRowIndex];
  const to = m.endpoints[td.cellIndex - 1];
  if (from !== undefined && to !== undefined) explainCell(td, m, from, to);
}

// The clicked cell again, in the matrix now shown (if it still has both endpoints).
function reselect() {
  const m = matrices[Number($("which").value) || 0];
  const { from, to, title } = selected;
  const row = m ? m.endpoints.indexOf(from) : -1;
  const col = m ? m.endpoints.indexOf(to) : -1;
  if (row < 0 || col < 0 || matrixTitle(m) !== title) return;
  const td = $("matrix").tBodies[0].rows[row].cells[col + 1];
  explainCell(td, m, from, to);
}

async function explainCell(td, m, from, to) {
  selected = { from: from, to: to, title: matrixTitle(m) };
  for (const s of document.querySelectorAll("#matrix td.selected")) s.classList.remove("selected");
  td.classList.add("selected");
  $("explain-title").textContent = matrixTitle(m) + " from " + from + " to " + to;
  $("explain-title").className = "";
  $("explain-cause").textContent = "";
  $("explain-text").textContent = "";
  const params = new URLSearchParams({ from: from, to: to, protocol: m.protocol });
  if (m.port !== null && m.port !== undefined) params.set("port", String(m.port));
  try {
    const data = await getJson("/api/explain?" + params.toString());
    showError("explain-error", null);
    $("explain-cause").textContent = (data.allowed ? "ALLOWED: " : "DENIED: ") + data.cause;
    $("explain-text").textContent = data.text;
  } catch (e) {
    showError("explain-error", e);
  }
}

async function loadLint() {
  const tbody = $("lint").tBodies[0];
  try {
    const data = await getJson("/api/lint");
    showError("lint-error", null);
    tbody.replaceChildren();
    for (const f of data.findings) {
      const tr = el("tr");
      tr.appendChild(el("td", f.severity, "sev-" + f.severity));
      tr.appendChild(el("td", f.code));
      tr.appendChild(el("td", f.resource));
      tr.appendChild(el("td", f.message));
      tr.appendChild(el("td", f.fix));
      tbody.appendChild(tr);
    }
    $("lint-none").hidden = data.findings.length > 0;
  } catch (e) {
    tbody.replaceChildren();
    $("lint-none").hidden = true;
    showError("lint-error", e);
  }
  setStatus();
}

function peer(name, ip) {
  return name ? name + " (" + ip + ")" : ip;
}

let shownFlows = "";

async function loadFlows() {
  const tbody = $("flows").tBodies[0];
  try {
    const data = await getJson("/api/flows");
    showError("flows-error", null);
    const text = JSON.stringify(data.flows);
    if (text !== shownFlows) {
      shownFlows = text;
      tbody.replaceChildren();
      const newest = data.flows.slice(-MAX_FLOW_ROWS).reverse();
      $("flows-more").textContent = data.flows.length > MAX_FLOW_ROWS
        ? "Showing the newest " + MAX_FLOW_ROWS + " of " + data.flows.length + " (all: gingham flows --denied)."
        : "";
      for (const r of newest) {
        const tr = el("tr");
        tr.appendChild(el("td", r.time));
        tr.appendChild(el("td", r.node));
        tr.appendChild(el("td", peer(r.src, r.src_ip)));
        tr.appendChild(el("td", peer(r.dst, r.dst_ip)));
        tr.appendChild(el("td", r.port === null || r.port === undefined ? r.protocol : r.protocol + "/" + r.port));
        tr.appendChild(el("td", r.cause));
        tbody.appendChild(tr);
      }
      $("flows-none").hidden = data.flows.length > 0;
    }
  } catch (e) {
    showError("flows-error", e);
  }
  setStatus();
}

function every(ms, f) {
  const run = async () => {
    await f();
    setTimeout(run, ms);
  };
  run();
}

function start() {
  const q = new URLSearchParams(location.search);
  if (q.get("protocol")) $("protocol").value = q.get("protocol").toUpperCase();
  if (q.get("port")) $("port").value = q.get("port");
  if (q.get("namespace")) {
    const o = el("option", q.get("namespace"));
    o.value = q.get("namespace");
    $("namespace").appendChild(o);
    $("namespace").value = q.get("namespace");
  }
  $("matrix-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadMatrix(false);
  });
  $("namespace").addEventListener("change", () => loadMatrix(false));
  $("which").addEventListener("change", renderMatrix);
  $("matrix").addEventListener("click", matrixClicked);
  // The first answer, then the same question every MATRIX_EVERY_MS (also after an error:
  // the datastore down, the matrix shows once it answers).
  loadMatrix(false).then(() => setTimeout(() => every(MATRIX_EVERY_MS, () => loadMatrix(true)), MATRIX_EVERY_MS));
  every(LINT_EVERY_MS, loadLint);
  every(FLOWS_EVERY_MS, loadFlows);
}

start();
