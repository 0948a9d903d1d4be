"""Fixtures for ``obsflow collect`` tests: a spec whose sources are fresh topics on the real
broker, and the collector itself as a subprocess (``obsflow collect``, uvicorn, a free port)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from pipelines import DEFAULT_SPEC

ROOT = Path(__file__).resolve().parents[2]


def collect_spec_dict(
    tmp_path: Path, bootstrap: str, topics: dict[str, str], collect: dict | None = None, span_codec: str = "otlp_proto"
) -> dict:
    """The default spec on ``topics`` (event, log, span, metric, dead_letters), warehouse in ``tmp_path``."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update(
        {"bootstrap_servers": bootstrap, "group_id": f"collect-{uuid.uuid4().hex[:8]}", "poll_timeout": "200ms"}
    )
    d["sources"] = [
        {"name": "events", "topic": topics["event"], "signal": "event", "codec": "json"},
        {"name": "logs", "topic": topics["log"], "signal": "log", "codec": "otlp_proto"},
        {"name": "spans", "topic": topics["span"], "signal": "span", "codec": span_codec},
        {"name": "metrics", "topic": topics["metric"], "signal": "metric", "codec": "otlp_proto"},
    ]
    d.pop("alerts", None)
    d["outputs"] = {"alerts_topic": None, "dead_letters_topic": topics["dead_letters"]}
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [{"name": "all", "type": "always_sample"}]
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": 100}
            if st["kind"] == "rollup":
                st.pop("derive", None)
    d["collect"] = {"port": 0, "server": "uvicorn", **(collect or {})}
    return d


@pytest.fixture
def collect_topics(kafka_topic_factory) -> dict[str, str]:
    return {
        s: kafka_topic_factory(partitions=2, prefix=f"c{s[:3]}")
        for s in ("event", "log", "span", "metric", "dead_letters")
    }


class Collector:
    """A running ``obsflow collect`` subprocess."""

    def __init__(self, spec_path: Path, env: dict | None = None):
        self.stderr_path = spec_path.with_suffix(".stderr")
        e = dict(os.environ)
        e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
        e.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "collect", "--spec", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("w"),
            env=e,
            cwd=str(ROOT),
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"obsflow collect did not start: {line!r} {self.stderr_path.read_text()[-3000:]}")
        self.url = line.split("listening on ", 1)[1].strip()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"collector at {self.url} not ready after {timeout}s")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def start_collector(tmp_path):
    """``start(spec_dict, env=None) -> Collector`` (ready); every collector is stopped afterwards."""
    started: list[Collector] = []

    def start(spec: dict, env: dict | None = None, ready: bool = True) -> Collector:
        path = tmp_path / f"collect-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(spec))
        c = Collector(path, env)
        started.append(c)
        if ready:
            c.wait_ready()
        return c

    yield start
    for c in started:
        c.stop()
        err = c.stderr_path.read_text()
        if err.strip():
            print(f"--- obsflow collect stderr ---\n{err[-5000:]}")
