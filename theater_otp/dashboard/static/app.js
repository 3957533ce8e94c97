// The dashboard page: the tree and the restart latencies from /api/stream, an actor's events and
// logs from /api/actor/ID/events (both Server-Sent Events), restart and stop through POST /api/...
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const q = "token=" + encodeURIComponent(token);
  const $ = (sel) => document.querySelector(sel);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const state = { tree: null, at: 0, restarts: {}, latencies: [], selected: null, actorStream: null };

  function duration(s) {
    if (s == null) return "";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }

  function rows(node, depth, out) {
    out.push([node, depth]);
    for (const c of node.children || []) rows(c, depth + 1, out);
    return out;
  }

  function renderTree() {
    const t = state.tree;
    if (!t) return;
    $("#node").textContent = "node pid " + t.node_pid;
    const since = (Date.now() - state.at) / 1000;
    const html = rows(t, 0, []).map(([n, d]) => {
      const prev = state.restarts[n.path];
      const changed = prev != null && prev !== n.restarts;
      state.restarts[n.path] = n.restarts;
      const up = n.uptime == null ? "" : duration(n.uptime + since);
      const buttons = d === 0 ? "" :
        `<button class="restart" data-path="${esc(n.path)}">restart</button>` +
        `<button class="stop" data-path="${esc(n.path)}">stop</button>`;
      const sel = state.selected && state.selected.path === n.path ? " selected" : "";
      return `<tr class="${esc(n.kind)}${sel}" data-path="${esc(n.path)}" data-actor="${esc(n.actor_id || "")}">` +
        `<td class="path" data-depth="${d}">${esc(n.id)}</td>` +
        `<td class="kind">${n.kind === "supervisor" ? esc(n.strategy) : esc(n.name || "actor")}</td>` +
        `<td><span class="status ${esc(n.status)}">${esc(n.status)}</span></td>` +
        `<td class="pid">${esc(n.pid == null ? "" : n.pid)}</td>` +
        `<td class="restarts${changed ? " changed" : ""}">${esc(n.restarts)}</td>` +
        `<td class="uptime" data-uptime="${n.uptime == null ? "" : n.uptime}">${up}</td>` +
        `<td>${buttons}</td></tr>`;
    }).join("");
    $("#tree tbody").innerHTML = html;
    // indentation through the CSSOM: the page's CSP allows no inline style attributes
    for (const td of document.querySelectorAll("td.path")) td.style.paddingLeft = (6 + 16 * td.dataset.depth) + "px";
  }

  function tickUptimes() {
    const since = (Date.now() - state.at) / 1000;
    for (const td of document.querySelectorAll("td.uptime")) {
      const u = td.dataset.uptime;
      if (u !== "") td.textContent = duration(parseFloat(u) + since);
    }
  }

  function renderLatency() {
    const svg = $("#latency svg");
    const data = state.latencies.slice(-60);
    if (!data.length) {
      svg.innerHTML = '<text x="8" y="20">no restart yet</text>';
      $("#latency-summary").textContent = "";
      return;
    }
    const max = Math.max(...data.map((x) => x.ms), 1);
    const w = 600 / 60;
    svg.innerHTML = data.map((x, i) => {
      const h = Math.max(1, (x.ms / max) * 140);
      const cls = x.cause === "child_terminated" ? "exit" : "stop";
      return `<rect class="${cls}" x="${i * w + 1}" y="${150 - h}" width="${w - 2}" height="${h}">` +
        `<title>${esc(x.path)}: ${x.ms.toFixed(1)} ms (${esc(x.cause)})</title></rect>`;
    }).join("") + `<text x="4" y="10">${max.toFixed(1)} ms</text><line x1="0" y1="150" x2="600" y2="150" stroke="#999"/>`;
    const sorted = data.map((x) => x.ms).sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)];
    $("#latency-summary").textContent =
      `(${state.latencies.length} restart(s); last ${data[data.length - 1].ms.toFixed(1)} ms, p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms)`;
  }

  function setTree(tree) {
    if (!tree) return;
    state.tree = tree;
    state.at = Date.now();
    renderTree();
  }

  function connect() {
    const es = new EventSource("api/stream?" + q);
    es.addEventListener("open", () => { $("#conn").textContent = "live"; $("#conn").className = "conn up"; });
    es.addEventListener("error", () => { $("#conn").textContent = "reconnecting"; $("#conn").className = "conn down"; });
    es.addEventListener("hello", (m) => {
      const d = JSON.parse(m.data);
      state.latencies = d.latencies || [];
      setTree(d.tree);
      renderLatency();
    });
    es.addEventListener("tree", (m) => setTree(JSON.parse(m.data)));
    es.addEventListener("latency", (m) => {
      state.latencies.push(JSON.parse(m.data));
      if (state.latencies.length > 200) state.latencies.shift();
      renderLatency();
    });
  }

  function add(list, html, cls, keep) {
    const li = document.createElement("li");
    li.innerHTML = html;
    if (cls) li.className = cls;
    list.prepend(li);
    while (list.children.length > keep) list.lastChild.remove();
  }

  function stamp(ns) {
    return new Date(ns / 1e6).toISOString().slice(11, 23);
  }

  function selectActor(path, actorId) {
    if (!actorId) return;
    if (state.actorStream) state.actorStream.close();
    state.selected = { path: path, actor: actorId };
    $("#actor-title").textContent = path + "  (" + actorId + ")";
    $("#timeline").innerHTML = "";
    $("#logs").innerHTML = "";
    renderTree();
    const es = new EventSource("api/actor/" + encodeURIComponent(actorId) + "/events?" + q);
    state.actorStream = es;
    es.addEventListener("open", () => { $("#timeline").innerHTML = ""; $("#logs").innerHTML = ""; });
    es.addEventListener("events", (m) => {
      for (const e of JSON.parse(m.data)) {
        add($("#timeline"), `<span class="inc">${stamp(e.timestamp)} #${e.incarnation} seq ${e.seq}</span> ` +
          `<span class="etype">${esc(e.type)}</span> ${esc(e.summary)}`, "event", 500);
        if (e.log) {
          add($("#logs"), `${stamp(e.timestamp)} #${e.incarnation} ${esc(e.log[0].toUpperCase())} ${esc(e.log[1])}`,
            "log lvl-" + e.log[0], 500);
        }
      }
    });
  }

  async function act(kind, path, body) {
    $("#message").textContent = kind + " " + path + " …";
    try {
      const r = await fetch("api/" + kind + "?" + q, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body || { target: path }),
      });
      const d = await r.json();
      $("#message").textContent = r.ok ? `${kind}: ${path} (pid ${d.result && d.result.pid != null ? d.result.pid : "–"})`
        : `${kind} ${path}: ${d.error}`;
    } catch (err) {
      $("#message").textContent = `${kind} ${path}: ${err}`;
    }
  }

  $("#tree tbody").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (b) {
      ev.stopPropagation();
      act(b.classList.contains("restart") ? "restart" : "stop", b.dataset.path);
      return;
    }
    const tr = ev.target.closest("tr.actor");
    if (tr) selectActor(tr.dataset.path, tr.dataset.actor);
  });

  $("#start-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const manifest = $("#start-manifest").value.trim();
    if (manifest) act("start", manifest, { manifest: manifest });
  });

  connect();
  renderLatency();
  setInterval(tickUptimes, 1000);
})();
