"""The JavaScript tracker in a real headless Chromium (Debian's ``chromium``, driven by
Playwright through its executable path): a page on another origin loads /tracker.js
from ``obsflow collect`` and two visitors walk the signup form (one gives up on step 3,
one completes) → the events and sessions tables hold the right rows and funnel."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests

from pipelines.loader import parse_spec
from runners.job import RunRequest
from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import read_topic
from tests.helpers import read_table

pytestmark = [pytest.mark.collect, pytest.mark.kafka]

TRACKER = Path(__file__).resolve().parents[2] / "collector" / "tracker"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PAGE = """<!doctype html><html><head><title>Sign up</title>
<script src="{collector}/tracker.js" data-endpoint="{collector}" data-key="pk-web-1"></script></head>
<body style="height: 4000px">
<form data-obsflow-form="signup" id="signup">
{steps}
</form>
<script>
function show(n) {{
  document.querySelectorAll("fieldset").forEach(function (f) {{ f.hidden = f.getAttribute("data-obsflow-step") != n; }});
  document.getElementById("f" + n).focus();
}}
document.getElementById("signup").addEventListener("submit", function (e) {{
  e.preventDefault();
  obsflow.track("signup_complete", {{form: "signup"}});
  document.body.insertAdjacentHTML("beforeend", "<p id='done'>Welcome</p>");
}});
</script></body></html>"""
STEP = """<fieldset data-obsflow-step="{n}"{hidden}><input id="f{n}" name="f{n}">
<button type="{kind}" id="{bid}"{onclick}>{label}</button></fieldset>"""


def page_html(collector: str) -> str:
    steps = "\n".join(
        STEP.format(
            n=n,
            hidden="" if n == 1 else " hidden",
            kind="submit" if n == 5 else "button",
            bid="submit" if n == 5 else f"next-{n}",
            onclick="" if n == 5 else f' onclick="show({n + 1})"',
            label="Sign up" if n == 5 else "Next",
        )
        for n in range(1, 6)
    )
    return PAGE.format(collector=collector, steps=steps)


def ensure_tracker_built() -> None:
    """``npm ci`` + ``npm run build`` in collector/tracker when dist/tracker.js is missing (cache outside the repo)."""
    if (TRACKER / "dist" / "tracker.js").exists():
        return
    cache = Path(os.environ.get("OBSFLOW_CACHE", Path.home() / ".cache" / "obsflow")) / "npm"
    subprocess.run(["npm", "ci", "--cache", str(cache), "--no-audit", "--no-fund"], cwd=TRACKER, check=True)
    subprocess.run(["npm", "run", "build"], cwd=TRACKER, check=True)


@pytest.fixture
def site():
    """A tiny web server for the page (another origin than the collector): ``(base_url, set_html)``."""
    html = {"body": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(html["body"])

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", functools.partial(html.__setitem__, "body")
    srv.shutdown()
    srv.server_close()


def test_tracker_in_chromium_signup_funnel(kafka_broker, collect_topics, tmp_path, start_collector, site):
    from playwright.sync_api import sync_playwright

    ensure_tracker_built()
    origin, set_html = site
    d = collect_spec_dict(
        tmp_path,
        kafka_broker.bootstrap,
        collect_topics,
        collect={"cors_origins": [origin], "keys": [{"name": "web", "kind": "public", "env": "COLLECT_TEST_WEB_KEY"}]},
    )
    c = start_collector(d, env={"COLLECT_TEST_WEB_KEY": "pk-web-1"})
    js = requests.get(c.url + "/tracker.js", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/javascript")
    set_html(page_html(c.url).encode())

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # visitor A: steps 1 and 2, types on step 3, leaves
            a = browser.new_context().new_page()
            a.goto(origin + "/signup")
            a.fill("#f1", "a")
            a.click("#next-1")
            a.fill("#f2", "b")
            a.click("#next-2")
            a.fill("#f3", "c")
            a.goto("about:blank")  # pagehide: step 3 reported, the rest sent with sendBeacon
            # visitor B: scrolls, hits a script error, completes every step and submits
            b = browser.new_context().new_page()
            b.goto(origin + "/signup")
            b.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
            b.evaluate("setTimeout(function () { throw new Error('profile of jane@example.org failed'); }, 0)")
            b.fill("#f1", "a")
            for n in range(1, 5):
                b.click(f"#next-{n}")
                b.fill(f"#f{n + 1}", "x")
            b.click("#submit")
            b.wait_for_selector("#done")
            b.goto("about:blank")
            a.context.close()
            b.context.close()
        finally:
            browser.close()

    want = 7 + 19
    deadline = time.monotonic() + 60
    while True:
        msgs = read_topic(kafka_broker.bootstrap, collect_topics["event"])
        n = sum(len(orjson.loads(m.value())["events"]) for m in msgs)
        if n >= want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert n == want, f"{n} interactions in Kafka, want {want}"
    assert read_topic(kafka_broker.bootstrap, collect_topics["dead_letters"]) == []

    spec = parse_spec(d)
    from runners.bytewax.run import run

    run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))

    rows = read_table(spec, "events").to_pylist()
    by_session: dict[str, list] = {}
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(r)
    assert len(by_session) == 2
    done = next(s for s, rs in by_session.items() if any(r["event_type"] == "signup_complete" for r in rs))
    left = next(s for s in by_session if s != done)

    def summary(rs):
        return sorted((r["event_type"], r["target"], r["form_step"], r["scroll_depth"]) for r in rs)

    assert summary(by_session[left]) == sorted(
        [
            ("page_view", None, None, None),
            ("form_start", None, None, None),
            ("click", "#next-1", None, None),
            ("click", "#next-2", None, None),
            ("form_step", None, 1, None),
            ("form_step", None, 2, None),
            ("form_step", None, 3, None),
        ]
    )
    assert summary(by_session[done]) == sorted(
        [
            ("page_view", None, None, None),
            ("form_start", None, None, None),
            ("form_submit", None, None, None),
            ("signup_complete", None, None, None),
            ("error", None, None, None),
            ("click", "#submit", None, None),
        ]
        + [("click", f"#next-{n}", None, None) for n in range(1, 5)]
        + [("form_step", None, n, None) for n in range(1, 6)]
        + [("scroll", None, None, depth) for depth in (0.25, 0.5, 0.75, 1.0)]
    )
    err = next(r for r in by_session[done] if r["event_type"] == "error")
    assert (
        "jane@example.org" not in (err["error_message"] + (err["error_stack"] or ""))
        and "[EMAIL]" in err["error_message"]
    )
    assert all(r["page"] == "/signup" and r["browser"] for r in rows)
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in rows if r["event_type"] == "form_step")

    sessions = {s["session_id"]: s for s in read_table(spec, "sessions").to_pylist()}
    assert set(sessions) == {done, left}
    assert (
        sessions[left]["funnel"],
        sessions[left]["funnel_steps_reached"],
        sessions[left]["funnel_last_step"],
        sessions[left]["abandoned"],
    ) == ("signup", 5, "step_3", True)
    assert (
        sessions[done]["funnel_steps_reached"],
        sessions[done]["funnel_last_step"],
        sessions[done]["abandoned"],
    ) == (9, "complete", False)
