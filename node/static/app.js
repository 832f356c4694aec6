// riversync node UI: reads the node's local API with the token the user gives.
// The token stays in sessionStorage of this tab; every call sends it as a bearer token.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("riversync-token") || "";

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = data.error || { code: "HTTP_" + resp.status, message: resp.statusText };
    throw new Error(e.code + ": " + e.message + (e.hint ? " (" + e.hint + ")" : ""));
  }
  return data;
}

function say(text) { $("#message").textContent = text; }

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  tr.appendChild(td);
  return td;
}

function ago(ts, now) {
  if (!ts) return "never";
  const s = Math.max(0, now - ts);
  return s < 120 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

async function loadHealth() {
  const st = await api("GET", "/v1/status");
  $("#node").textContent = st.node_id + " (office " + st.office + ")";
  const lvl = $("#level");
  lvl.textContent = st.level;
  lvl.className = "level " + st.level;
  const items = {
    "replication": (st.agent || {}).state,
    "last push": ago(st.last_push_ok, st.now),
    "last pull": ago(st.last_pull_ok, st.now),
    "queued events": st.outbox,
    "inbound lag": st.inbound_lag,
    "open conflicts": st.open_conflicts,
    "parked events": st.parked,
  };
  const dl = $("#health-list");
  dl.innerHTML = "";
  for (const [k, v] of Object.entries(items)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v === null ? "-" : String(v);
    dl.append(dt, dd);
  }
  const ul = $("#reasons");
  ul.innerHTML = "";
  for (const r of st.reasons) {
    const li = document.createElement("li");
    li.textContent = r.level + ": " + r.message;
    ul.appendChild(li);
  }
}

async function loadTables() {
  const t = await api("GET", "/v1/tables");
  const sel = $("#table");
  if (sel.options.length) return;
  for (const tab of t.tables) {
    const o = document.createElement("option");
    o.value = o.textContent = tab.name;
    sel.appendChild(o);
  }
}

async function loadRows() {
  const table = $("#table").value;
  if (!table) return;
  const res = await api("GET", "/v1/tables/" + encodeURIComponent(table) + "/rows?limit=200");
  const cols = res.rows.length ? Object.keys(res.rows[0]) : [];
  const head = $("#row-table thead");
  head.innerHTML = "";
  const htr = document.createElement("tr");
  cols.forEach((c) => { const th = document.createElement("th"); th.textContent = c; htr.appendChild(th); });
  head.appendChild(htr);
  const body = $("#row-table tbody");
  body.innerHTML = "";
  for (const row of res.rows) {
    const tr = document.createElement("tr");
    cols.forEach((c) => cell(tr, typeof row[c] === "object" && row[c] !== null ? JSON.stringify(row[c]) : row[c]));
    body.appendChild(tr);
  }
}

async function resolve(id, decision) {
  try {
    await api("POST", "/v1/conflicts/" + encodeURIComponent(id) + "/resolve", { decision });
    say("conflict " + id + " resolved: " + decision);
    await refresh();
  } catch (e) { say(e.message); }
}

async function loadConflicts() {
  let res;
  try { res = await api("GET", "/v1/conflicts"); } catch (e) {
    $("#conflict-table tbody").innerHTML = "";
    $("#parked").textContent = e.message;
    return;
  }
  const body = $("#conflict-table tbody");
  body.innerHTML = "";
  for (const c of res.conflicts) {
    const id = c.id || c.conflict_id;
    const tr = document.createElement("tr");
    cell(tr, id); cell(tr, c.table + "/" + c.pk); cell(tr, c.cause); cell(tr, c.node || c.origin);
    const td = cell(tr, "");
    for (const d of ["accept", "keep"]) {
      const b = document.createElement("button");
      b.textContent = d;
      b.onclick = () => resolve(id, d);
      td.appendChild(b);
    }
    body.appendChild(tr);
  }
  const ul = $("#parked");
  ul.innerHTML = "";
  for (const p of res.parked) {
    const li = document.createElement("li");
    li.textContent = p.table + "/" + p.pk + ": " + p.cause;
    ul.appendChild(li);
  }
}

async function loadStaging() {
  const body = $("#staging-table tbody");
  body.innerHTML = "";
  try {
    const res = await api("GET", "/v1/staging");
    for (const b of res.batches || []) {
      const tr = document.createElement("tr");
      cell(tr, b.id); cell(tr, b.kind); cell(tr, b.source); cell(tr, b.state);
      cell(tr, (b.summary && JSON.stringify(b.summary)) || "");
      const td = cell(tr, "");
      if (b.state === "pending" || b.state === "failed") {
        for (const action of ["apply", "reject"]) {
          const btn = document.createElement("button");
          btn.textContent = action;
          btn.onclick = () => staging(b.id, action, b.confirm_required);
          td.appendChild(btn);
        }
      }
      body.appendChild(tr);
    }
    $("#staging-note").textContent = "";
  } catch (e) {
    $("#staging-note").textContent = "Staging: " + e.message;
  }
}

async function staging(id, action, confirmRequired) {
  const body = {};
  if (action === "apply" && confirmRequired) {
    if (!window.confirm("This file looks like a riversync export. Apply it anyway?")) return;
    body.confirm_reimport = true;
  }
  try {
    await api("POST", "/v1/staging/" + id + "/" + action, body);
    say("staging batch " + id + ": " + action + " done");
  } catch (e) { say(e.message); }
  refresh();
}

async function refresh() {
  if (!token) { say("Enter an API token to see this node."); return; }
  try {
    await loadHealth();
    await loadTables();
    await loadRows();
    await loadConflicts();
    await loadStaging();
    say("");
  } catch (e) { say(e.message); }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("riversync-token", token);
  refresh();
});
$("#table").addEventListener("change", () => loadRows().catch((e) => say(e.message)));
$("#sync").addEventListener("click", async () => {
  try { const r = await api("POST", "/v1/sync"); say("synced: pushed " + r.pushed + ", pulled " + r.pulled); }
  catch (e) { say(e.message); }
  refresh();
});
refresh();
setInterval(refresh, 5000);
