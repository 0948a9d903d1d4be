"""The obsflow command as a user runs it: run, tables, query, and clear errors."""

import os
import subprocess
import sys

import yaml

from pipelines import DEFAULT_SPEC


def obsflow(*args, env=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True, text=True, env=e, timeout=600)


def test_run_tables_query(tmp_path):
    wh = str(tmp_path / "wh")
    r = obsflow("run", "--count", "2000", "--warehouse", wh, "--runner", "bytewax")
    assert r.returncode == 0, r.stderr
    assert "8,000 records in" in r.stdout  # events, logs, spans, metrics
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in r.stdout
    assert "obs.events" in r.stdout and "obs.dead_letters" in r.stdout
    t = obsflow("tables", "--warehouse", wh)
    assert t.returncode == 0
    lines = {l.split()[0]: l.split() for l in t.stdout.splitlines() if l.startswith("obs.")}
    assert set(lines) == {"obs.events", "obs.logs", "obs.dead_letters", "obs.spans", "obs.traces", "obs.metrics", "obs.sessions",
                          "obs.alerts"}
    q = obsflow("query", "SELECT count(*) AS n FROM obs.logs", "--warehouse", wh, "--format", "csv")
    assert q.returncode == 0, q.stderr
    n_logs = int(q.stdout.splitlines()[1])
    assert lines["obs.logs"][1] == f"{n_logs:,}"
    bad = obsflow("query", "SELECT nope FROM obs.logs", "--warehouse", wh)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_wrong_spec_fails_at_load_with_the_key_path(tmp_path):
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["flows"][0]["steps"][0]["max_future"] = "soon"
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    r = obsflow("run", "--spec", str(spec), "--count", "10", "--warehouse", str(tmp_path / "wh"))
    assert r.returncode == 2
    assert "flows[0].steps[0].max_future: expected a duration" in r.stderr


def test_missing_pseudonym_key_is_explained(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_PSEUDONYM_KEY"}
    r = subprocess.run([sys.executable, "-m", "runners.cli", "run", "--count", "10", "--warehouse", str(tmp_path / "wh")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert "set the environment variable OBSFLOW_PSEUDONYM_KEY" in r.stderr and "--dev-key" in r.stderr
