// obsflow ui: charts (ECharts) from each panel's JSON API, and the trace waterfall (spans from its
// JSON API, folding, virtual scrolling).
// Loaded from /static (CSP 'self'): no inline script, no eval.
"use strict";

function drawChart(el) {
  const spec = JSON.parse(el.dataset.chart);
  fetch(el.dataset.src, { headers: { Accept: "application/json" } })
    .then((r) => r.json())
    .then((data) => {
      const cols = data.columns;
      const xi = cols.indexOf(spec.x);
      const si = spec.series ? cols.indexOf(spec.series) : -1;
      const render = (ycol) => {
        const yi = cols.indexOf(ycol);
        let series;
        if (si >= 0) {
          const by = new Map();
          for (const r of data.rows) {
            const k = String(r[si]);
            if (!by.has(k)) by.set(k, []);
            by.get(k).push([r[xi], r[yi]]);
          }
          series = [...by.entries()].map(([name, pts]) => ({ name, type: spec.type, data: pts, showSymbol: pts.length < 30 }));
        } else if (spec.also) {
          series = [ycol, ...spec.also].map((c) => {
            const ci = cols.indexOf(c);
            return { name: c, type: spec.type, data: data.rows.map((r) => [r[xi], r[ci]]), showSymbol: data.rows.length < 30 };
          });
        } else {
          series = [{ name: ycol, type: spec.type, data: data.rows.map((r) => r[yi]) }];
        }
        const timeAxis = si >= 0 || Boolean(spec.also);
        const chart = echarts.getInstanceByDom(el) || echarts.init(el, null, { renderer: "canvas" });
        chart.setOption({
          animation: false,
          tooltip: { trigger: "axis" },
          legend: { type: "scroll", top: 0 },
          grid: { left: 60, right: 20, top: 30, bottom: 30 },
          xAxis: timeAxis ? { type: "time" } : { type: "category", data: data.rows.map((r) => r[xi]) },
          yAxis: { type: "value", name: ycol },
          series,
        }, true);
      };
      if (spec.choices) {
        const sel = document.createElement("select");
        sel.className = "metric";
        for (const c of spec.choices) sel.add(new Option(c, c, c === spec.y, c === spec.y));
        sel.addEventListener("change", () => render(sel.value));
        el.parentNode.insertBefore(sel, el);
      }
      render(spec.y);
      el.dataset.drawn = "1";
    })
    .catch((e) => { el.textContent = "chart unavailable: " + e; });
}

function showLogs(href) {
  // /traces/<id>?span_id=<s> -> the logs fragment /traces/<id>/logs?span_id=<s>, swapped into #trace-logs
  const u = new URL(href, location.href);
  const frag = u.pathname + "/logs" + u.search;
  htmx.ajax("GET", frag, { target: "#trace-logs", swap: "innerHTML" }).then(() => {
    history.pushState({ obsflowLogs: true }, "", u.pathname + u.search);
  });
}

// -- the trace waterfall: spans from the spans API, a tree in start order, virtual scrolling ----
const WF_MIN_ROWS = 100;   // a trace of up to this many visible spans is rendered whole
const WF_OVERSCAN = 30;    // rows rendered above and below the ones in view

function isoMicros(text) {
  // "2026-01-31T12:00:00.123456+00:00" -> microseconds since the epoch (Date.parse keeps ms only)
  const m = /^(.{19})(\.\d+)?(.*)$/.exec(text || "");
  if (!m) return NaN;
  const frac = m[2] ? Math.round(parseFloat("0" + m[2]) * 1e6) : 0;
  return Date.parse(m[1] + (m[3] || "Z")) * 1000 + frac;
}

function spanTree(data) {
  // preorder (parent before children, siblings in start order as the SQL sorts them), depth,
  // subtree size, and each span's bar as percent of the trace's time axis
  const c = Object.fromEntries(data.columns.map((n, i) => [n, i]));
  const rows = data.rows;
  const ids = new Set(rows.map((r) => r[c.span_id]));
  const kids = new Map();
  rows.forEach((r, i) => {
    let p = r[c.parent_span_id];
    if (!ids.has(p) || p === r[c.span_id]) p = null;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(i);
  });
  const starts = rows.map((r) => isoMicros(r[c.start]));
  const ends = rows.map((r) => isoMicros(r[c.end]));
  const t0 = Math.min(...starts.filter(Number.isFinite));
  const total = Math.max((Math.max(...ends.filter(Number.isFinite)) - t0) / 1000, 1e-3);
  const order = [], depth = [], seen = new Set();
  const stack = (kids.get(null) || []).slice().reverse().map((i) => [i, 0]);
  while (stack.length) {
    const [i, d] = stack.pop();
    const id = rows[i][c.span_id];
    if (seen.has(id)) continue;
    seen.add(id);
    order.push(i);
    depth.push(d);
    const k = kids.get(id) || [];
    for (let j = k.length - 1; j >= 0; j--) stack.push([k[j], d + 1]);
  }
  const size = new Array(order.length).fill(1);
  const open = [];
  for (let p = 0; p <= order.length; p++) {
    const d = p < order.length ? depth[p] : -1;
    while (open.length && depth[open[open.length - 1]] >= d) {
      const q = open.pop();
      size[q] = p - q;
    }
    open.push(p);
  }
  return { c, rows, order, depth, size, starts, total, t0 };
}

function spanRow(wf, p) {
  const { c, rows, starts, total, t0 } = wf.tree;
  const r = rows[wf.tree.order[p]];
  const err = r[c.status_code] === "ERROR";
  const tr = document.createElement("tr");
  tr.className = "span " + (err ? "err" : "ok") + (wf.folded.has(p) ? " folded" : "");
  tr.dataset.id = r[c.span_id];
  tr.dataset.parent = r[c.parent_span_id] || "";
  tr.dataset.depth = wf.tree.depth[p];
  tr.dataset.pos = p;
  const name = tr.insertCell();
  name.className = "name";
  name.style.paddingLeft = (8 + 14 * wf.tree.depth[p]) + "px";
  if (wf.tree.size[p] > 1) {
    const b = document.createElement("button");
    b.className = "fold"; b.type = "button"; b.textContent = "▾"; b.setAttribute("aria-label", "fold");
    name.append(b);
  } else {
    const leaf = document.createElement("span");
    leaf.className = "leaf";
    name.append(leaf);
  }
  const svc = document.createElement("b");
  svc.textContent = r[c.service];
  name.append(svc, " " + r[c.name]);
  if (err) {
    const em = document.createElement("em");
    em.textContent = r[c.status_message] || "error";
    name.append(" ", em);
  }
  const dur = Number(r[c.duration_ms] || 0);
  const d = tr.insertCell();
  d.className = "num";
  d.textContent = dur.toFixed(3);
  const bar = tr.insertCell();
  bar.className = "bar-col";
  const i = document.createElement("i");
  const off = Number.isFinite(starts[wf.tree.order[p]]) ? (starts[wf.tree.order[p]] - t0) / 1000 : 0;
  i.style.marginLeft = (100 * off / total).toFixed(2) + "%";
  i.style.width = Math.max(100 * dur / total, 0.1).toFixed(2) + "%";
  bar.append(i);
  const l = tr.insertCell();
  const a = document.createElement("a");
  a.className = "span-logs";
  a.href = "/traces/" + wf.table.dataset.trace + "?span_id=" + encodeURIComponent(r[c.span_id]);
  a.textContent = "logs";
  l.append(a);
  return tr;
}

function padRow(px) {
  const tr = document.createElement("tr");
  tr.className = "pad";
  const td = tr.insertCell();
  td.colSpan = 4;
  td.style.height = px + "px";
  td.style.padding = "0";
  td.style.border = "0";
  return tr;
}

function visibleSpans(wf) {
  const out = [];
  for (let p = 0; p < wf.tree.order.length;) {
    out.push(p);
    p += wf.folded.has(p) ? wf.tree.size[p] : 1;
  }
  return out;
}

function renderWindow(wf) {
  const vis = wf.visible;
  const h = wf.rowH;
  const inView = Math.ceil(wf.wrap.clientHeight / h) + 2 * WF_OVERSCAN;
  let first = 0, last = vis.length;
  if (vis.length > Math.max(WF_MIN_ROWS, inView)) {
    const top = Math.max(wf.wrap.scrollTop - wf.table.tHead.offsetHeight, 0);
    first = Math.max(Math.floor(top / h) - WF_OVERSCAN, 0);
    last = Math.min(first + inView, vis.length);
  }
  const body = wf.table.tBodies[0];
  const frag = document.createDocumentFragment();
  if (first > 0) frag.append(padRow(first * h));
  for (let k = first; k < last; k++) frag.append(spanRow(wf, vis[k]));
  if (last < vis.length) frag.append(padRow((vis.length - last) * h));
  body.replaceChildren(frag);
  wf.table.dataset.visible = vis.length;
  wf.table.dataset.first = first;
  wf.table.dataset.rendered = last - first;
}

function initWaterfall(table) {
  const wrap = table.closest(".waterfall-wrap");
  const section = table.closest("section") || document;
  section.addEventListener("click", (ev) => {
    const a = ev.target.closest("a.span-logs, a.all-logs");
    if (!a || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    showLogs(a.href);
  });
  window.addEventListener("popstate", () => location.reload());
  fetch(table.dataset.src, { headers: { Accept: "application/json" } })
    .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then((data) => {
      const wf = { table, wrap, tree: spanTree(data), folded: new Set(), rowH: 22 };
      wf.visible = visibleSpans(wf);
      renderWindow(wf);
      const one = table.querySelector("tr.span");
      if (one && one.offsetHeight) wf.rowH = one.offsetHeight;  // the rows' real height, for the spacers
      renderWindow(wf);
      let queued = false;
      wrap.addEventListener("scroll", () => {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; renderWindow(wf); });
      });
      table.addEventListener("click", (ev) => {
        const btn = ev.target.closest("button.fold");
        if (!btn) return;
        const p = Number(btn.closest("tr.span").dataset.pos);
        if (wf.folded.has(p)) wf.folded.delete(p); else wf.folded.add(p);
        wf.visible = visibleSpans(wf);
        renderWindow(wf);
      });
      table.dataset.ready = "done";
      performance.mark("waterfall-rendered");
    })
    .catch((e) => {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = "waterfall unavailable: " + e;
      wrap.replaceWith(p);
    });
}

function init(root) {
  for (const el of root.querySelectorAll(".chart:not([data-drawn])")) drawChart(el);
  for (const t of root.querySelectorAll("table.waterfall:not([data-ready])")) { t.dataset.ready = "1"; initWaterfall(t); }
}

document.addEventListener("DOMContentLoaded", () => {
  init(document);
  document.body.addEventListener("htmx:afterSwap", (ev) => init(ev.target));
  window.addEventListener("resize", () => {
    for (const el of document.querySelectorAll(".chart[data-drawn]")) { const c = echarts.getInstanceByDom(el); if (c) c.resize(); }
  });
});
