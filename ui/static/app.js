// obsflow ui: charts (ECharts) from each panel's JSON API, and the trace waterfall's folding.
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

function descendants(table, id) {
  const kids = new Map();
  for (const tr of table.querySelectorAll("tr.span")) {
    const p = tr.dataset.parent;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(tr);
  }
  const out = [];
  const stack = [...(kids.get(id) || [])];
  while (stack.length) {
    const tr = stack.pop();
    out.push(tr);
    stack.push(...(kids.get(tr.dataset.id) || []));
  }
  return out;
}

function showLogs(href) {
  // /traces/<id>?span_id=<s> -> the logs fragment /traces/<id>/logs?span_id=<s>, swapped into #trace-logs
  const u = new URL(href, location.href);
  const frag = u.pathname + "/logs" + u.search;
  htmx.ajax("GET", frag, { target: "#trace-logs", swap: "innerHTML" }).then(() => {
    history.pushState({ obsflowLogs: true }, "", u.pathname + u.search);
  });
}

function initWaterfall(table) {
  for (const tr of table.querySelectorAll("tr.span")) {
    tr.cells[0].style.paddingLeft = (8 + 14 * Number(tr.dataset.depth || 0)) + "px";
    const bar = tr.cells[2].firstElementChild;
    bar.style.marginLeft = tr.dataset.x + "%";
    bar.style.width = tr.dataset.w + "%";
  }
  const section = table.closest("section") || document;
  section.addEventListener("click", (ev) => {
    const a = ev.target.closest("a.span-logs, a.all-logs");
    if (!a || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    showLogs(a.href);
  });
  window.addEventListener("popstate", () => location.reload());
  table.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button.fold");
    if (!btn) return;
    const tr = btn.closest("tr.span");
    const fold = !tr.classList.contains("folded");
    tr.classList.toggle("folded", fold);
    for (const d of descendants(table, tr.dataset.id)) {
      d.classList.toggle("hidden", fold);
      if (!fold) d.classList.remove("folded");
    }
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
