"""A real Prometheus (Debian package ``prometheus``) on 127.0.0.1, serving given samples.

``start(openmetrics_text)`` writes the samples (OpenMetrics text exposition with
timestamps, ending in ``# EOF``) into a fresh directory under the run directory, turns them
into TSDB blocks with ``promtool tsdb create-blocks-from openmetrics``, starts
``/usr/bin/prometheus`` on a free port over those blocks (no scrape targets, retention long
enough for any test data) and waits for ``GET /-/ready``. ``PrometheusServer.query(expr,
at_ms)`` runs an instant query through the HTTP API (``/api/v1/query``). Install with
``apt-get install -y prometheus`` (the ``make services`` step does)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from infra.service import LocalHttpServer, free_port, run_dir

CONFIG = "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\nscrape_configs: []\n"


def binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``; ``FileNotFoundError`` with the install command."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if not all(found):
        raise FileNotFoundError("Prometheus is not installed: apt-get install -y prometheus")
    return found  # type: ignore[return-value]


class PrometheusServer(LocalHttpServer):
    """Prometheus on 127.0.0.1 (see the module docstring)."""

    def query(self, expr: str, at_ms: int) -> list[tuple[dict, float]]:
        """Instant query ``expr`` at ``at_ms`` (epoch ms): ``[(labels, value)]`` of the result vector,
        sorted by labels. Raises ``RuntimeError`` with Prometheus' error text on a bad query."""
        q = urllib.parse.urlencode({"query": expr, "time": f"{at_ms / 1000:.3f}"})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=30) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"prometheus query {expr!r}: {e.read().decode(errors='replace')}") from e
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus query {expr!r}: {doc}")
        out = [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]
        return sorted(out, key=lambda x: sorted(x[0].items()))


def create_blocks(openmetrics_text: str, data: Path, directory: Path) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` of the text into ``data``; raises
    ``RuntimeError`` with promtool's output when it rejects the input."""
    src = directory / "samples.om"
    src.write_text(openmetrics_text if openmetrics_text.rstrip().endswith("# EOF") else openmetrics_text + "# EOF\n")
    done = subprocess.run(
        [binaries()[1], "tsdb", "create-blocks-from", "openmetrics", str(src), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"promtool create-blocks-from openmetrics failed ({done.returncode}): {done.stderr or done.stdout}"
        )


def start(openmetrics_text: str, timeout: float = 60.0) -> PrometheusServer:
    """Start one Prometheus over the given samples (see the module docstring)."""
    prom, _ = binaries()
    directory = Path(tempfile.mkdtemp(prefix="prometheus-", dir=run_dir("prometheus")))
    data = directory / "data"
    data.mkdir()
    create_blocks(openmetrics_text, data, directory)
    (directory / "prometheus.yml").write_text(CONFIG)
    port = free_port()
    argv = [
        prom,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=100y",
        f"--web.listen-address=127.0.0.1:{port}",
        "--query.lookback-delta=5m",
        "--web.enable-lifecycle",
    ]
    return PrometheusServer.launch("prometheus", argv, port, directory, timeout)


def openmetrics(series: dict[tuple[str, str, tuple], list[tuple[int, float]]]) -> str:
    """OpenMetrics text of ``{(name, type, labels): [(ts_ms, value)]}`` (type ``gauge`` or
    ``counter``; a counter's samples are written as ``name_total``), timestamps in seconds
    with millisecond precision, ending in ``# EOF``."""
    lines, typed = [], set()
    for (name, kind, labels), points in sorted(series.items(), key=lambda kv: kv[0][0]):
        if name not in typed:  # a metric family's series follow its TYPE line
            lines.append(f"# TYPE {name} {kind}")
            typed.add(name)
        metric = f"{name}_total" if kind == "counter" else name
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        for ts, v in sorted(points):
            lines.append(f"{metric}{{{lab}}} {v!r} {ts / 1000:.3f}")
    return "\n".join(lines) + "\n# EOF\n"
