/*! obsflow tracker: first-party product events for `obsflow collect`. No third-party code. */
(function (window, document) {
  "use strict";
  if (window.obsflow && window.obsflow.version) return;

  var VERSION = "0.1.0";
  var SESSION_GAP_MS = 30 * 60 * 1000;
  var BEACON_MAX = 60000; // sendBeacon payloads stay under the browsers' 64 KiB budget
  var script = document.currentScript;
  var cfg = {
    endpoint: (script && script.getAttribute("data-endpoint")) || (script ? new URL(script.src).origin : ""),
    key: (script && script.getAttribute("data-key")) || "",
    batchSize: 20,          // flush after this many envelopes
    maxBytes: 32000,        // ... or this many bytes
    flushInterval: 2000,    // ... or this many ms after the first queued one
    maxQueue: 1000,         // oldest envelopes dropped past this (counted in obsflow.dropped)
    maxBackoff: 30000,
    autoPageView: true,
  };
  var queue = [];
  var timer = null;
  var sending = false;
  var attempt = 0;
  var user = null;
  var api = { version: VERSION, dropped: 0, sent: 0 };

  function now() { return Date.now(); }
  function iso(ms) { return new Date(ms).toISOString(); }
  function rid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var a = new Uint8Array(16);
    window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function session() {
    var t = now();
    var sid = null;
    try {
      var s = JSON.parse(window.sessionStorage.getItem("obsflow_session") || "null");
      if (s && t - s.last < SESSION_GAP_MS) sid = s.id;
      sid = sid || rid();
      window.sessionStorage.setItem("obsflow_session", JSON.stringify({ id: sid, last: t }));
    } catch (e) {
      sid = api._sid || (api._sid = rid());
    }
    return sid;
  }

  function envelope(interaction) {
    var t = now();
    var env = { event_id: rid(), timestamp: iso(t), page: window.location.pathname, session_id: session(),
                platform: "web", events: [interaction] };
    if (user) env.user = user;
    return env;
  }

  function enqueue(interaction) {
    queue.push(envelope(interaction));
    while (queue.length > cfg.maxQueue) { queue.shift(); api.dropped++; }
    if (queue.length >= cfg.batchSize || size(queue) >= cfg.maxBytes) flush();
    else if (!timer) timer = setTimeout(flush, cfg.flushInterval);
  }

  function size(items) { return JSON.stringify(items).length; }

  function take(limit) {
    var out = [], bytes = 20;
    while (queue.length && out.length < cfg.batchSize) {
      var n = JSON.stringify(queue[0]).length + 1;
      if (out.length && bytes + n > limit) break;
      out.push(queue.shift());
      bytes += n;
    }
    return out;
  }

  function body(items) { return JSON.stringify({ batch: items, sent_at: iso(now()) }); }
  function url(path) { return cfg.endpoint + path + (cfg.key ? "?key=" + encodeURIComponent(cfg.key) : ""); }

  function backoff(retryAfter) {
    var base = Math.min(cfg.maxBackoff, 500 * Math.pow(2, attempt));
    var wait = Math.max(base * (0.5 + Math.random()), retryAfter * 1000);
    attempt++;
    return Math.min(wait, Math.max(cfg.maxBackoff, retryAfter * 1000));
  }

  // One batch at a time; 429/503/network errors put it back in front and retry with
  // jittered exponential backoff that honours Retry-After; other 4xx are final (the door
  // dead-lettered what it rejected and said so).
  function flush() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (sending || !queue.length) return;
    var items = take(cfg.maxBytes);
    sending = true;
    // text/plain keeps it a simple request: no CORS preflight
    window.fetch(url("/v1/events"), { method: "POST", body: body(items), keepalive: true,
                                      headers: { "Content-Type": "text/plain;charset=UTF-8" } })
      .then(function (r) {
        sending = false;
        if (r.status === 429 || r.status >= 500) {
          var ra = parseFloat(r.headers.get("Retry-After") || "0") || 0;
          queue = items.concat(queue);
          timer = setTimeout(flush, backoff(ra));
          return;
        }
        attempt = 0;
        if (r.ok) api.sent += items.length;
        if (queue.length) flush();
      }, function () {
        sending = false;
        queue = items.concat(queue);
        timer = setTimeout(flush, backoff(0));
      });
  }

  // On pagehide: everything left goes out with sendBeacon (survives the page), in chunks.
  function flushBeacon() {
    if (timer) { clearTimeout(timer); timer = null; }
    while (queue.length) {
      var items = take(BEACON_MAX);
      var ok = navigator.sendBeacon && navigator.sendBeacon(url("/v1/beacon"), new Blob([body(items)], { type: "text/plain" }));
      if (!ok) { queue = items.concat(queue); flush(); return; }
      api.sent += items.length;
    }
  }

  function selector(el) {
    if (!el || el.nodeType !== 1) return null;
    var named = el.closest ? el.closest("[data-obsflow-target],[id],a,button") : el;
    el = named || el;
    if (el.getAttribute("data-obsflow-target")) return el.getAttribute("data-obsflow-target");
    if (el.id) return "#" + el.id;
    var s = el.tagName.toLowerCase();
    if (el.classList && el.classList.length) s += "." + Array.prototype.slice.call(el.classList, 0, 2).join(".");
    return s;
  }

  // -- forms: <form data-obsflow-form="signup"> with <fieldset data-obsflow-step="1"> ...
  // form_start on the first focus inside; form_step N (with the ms spent on it) when the
  // user leaves step N: to another step, by submitting, or by leaving the page (so a
  // session that gives up on step 3 reports step 3, and no form_submit: abandoned).
  var forms = {};
  function formState(form) {
    var name = form.getAttribute("data-obsflow-form");
    return forms[name] || (forms[name] = { name: name, started: 0, step: null, since: 0, submitted: false });
  }
  function leaveStep(st) {
    if (st.step === null) return;
    enqueue({ type: "form_step", form: st.name, step: st.step, duration_ms: now() - st.since });
    st.step = null;
  }
  document.addEventListener("focusin", function (e) {
    var form = e.target.closest && e.target.closest("form[data-obsflow-form]");
    if (!form) return;
    var st = formState(form);
    if (st.submitted) return;
    if (!st.started) { st.started = now(); enqueue({ type: "form_start", form: st.name }); }
    var fs = e.target.closest("[data-obsflow-step]");
    var step = fs ? parseInt(fs.getAttribute("data-obsflow-step"), 10) : null;
    if (step !== null && step !== st.step) { leaveStep(st); st.step = step; st.since = now(); }
  }, true);
  document.addEventListener("submit", function (e) {
    var form = e.target.closest && e.target.closest("form[data-obsflow-form]");
    if (!form) return;
    var st = formState(form);
    leaveStep(st);
    st.submitted = true;
    enqueue({ type: "form_submit", form: st.name, duration_ms: st.started ? now() - st.started : null });
  }, true);

  document.addEventListener("click", function (e) {
    var t = selector(e.target);
    if (t) enqueue({ type: "click", target: t });
  }, true);

  var marks = [0.25, 0.5, 0.75, 1];
  var reached = 0;
  window.addEventListener("scroll", function () {
    var h = document.documentElement.scrollHeight - window.innerHeight;
    var d = h > 0 ? Math.min(1, window.scrollY / h) : 1;
    while (marks.length && d >= marks[0] - 1e-6) { reached = marks.shift(); enqueue({ type: "scroll", depth: reached }); }
  }, { passive: true });

  window.addEventListener("error", function (e) {
    enqueue({ type: "error", message: String(e.message || "error").slice(0, 1000),
              stackTrace: e.error && e.error.stack ? String(e.error.stack).slice(0, 8000) : null });
  });
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason || {};
    enqueue({ type: "error", message: String(r.message || r).slice(0, 1000), stackTrace: r.stack ? String(r.stack).slice(0, 8000) : null });
  });

  window.addEventListener("pagehide", function () {
    for (var k in forms) if (!forms[k].submitted) leaveStep(forms[k]);
    flushBeacon();
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flushBeacon();
  });

  api.init = function (options) { for (var k in options) cfg[k] = options[k]; return api; };
  api.identify = function (id) { user = id == null ? null : String(id); };
  api.track = function (type, fields) { var i = { type: type }; for (var k in fields || {}) i[k] = fields[k]; enqueue(i); };
  api.flush = flush;
  api.pending = function () { return queue.length + (sending ? 1 : 0); };
  window.obsflow = api;

  if (cfg.autoPageView) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { enqueue({ type: "page_view" }); });
    else enqueue({ type: "page_view" });
  }
})(window, document);
