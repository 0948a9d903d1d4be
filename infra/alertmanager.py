"""A real Prometheus Alertmanager (Debian package ``prometheus-alertmanager``) on 127.0.0.1.

``start()`` writes a config into a fresh directory under the run directory, starts
``/usr/bin/prometheus-alertmanager`` on a free port with clustering disabled
(``--cluster.listen-address=``) and waits for ``GET /-/ready``. Install the binary with
``apt-get install -y prometheus-alertmanager`` (``python -m infra.alertmanager`` starts one
and prints its URL)."""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.service import ManagedProcess, free_port, run_dir, wait_until

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")

DEFAULT_CONFIG = """\
route:
  receiver: default
  group_by: [alertname]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
  routes:
    - matchers: ['severity=~"P0|P1"']
      receiver: pager
    - matchers: ['severity="P2"']
      receiver: ticket
receivers:
  - name: default
  - name: pager
  - name: ticket
inhibit_rules:
  - source_matchers: ['severity="P0"']
    target_matchers: ['severity="P2"']
    equal: [service]
"""


def binary() -> str:
    for name in BINARY_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("Alertmanager is not installed: apt-get install -y prometheus-alertmanager")


@dataclass
class AlertmanagerServer:
    process: ManagedProcess
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def stop(self, remove_data: bool = True) -> None:
        self.process.stop()
        if remove_data:
            shutil.rmtree(self.directory, ignore_errors=True)


def start(config_yaml: str = DEFAULT_CONFIG, timeout: float = 30.0) -> AlertmanagerServer:
    directory = Path(tempfile.mkdtemp(prefix="alertmanager-", dir=run_dir("alertmanager")))
    (directory / "alertmanager.yml").write_text(config_yaml)
    (directory / "data").mkdir()
    port = free_port()
    argv = [binary(), f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    proc = ManagedProcess.spawn("alertmanager", argv, directory / "alertmanager.log")
    server = AlertmanagerServer(proc, port, directory)
    try:
        wait_until(lambda: proc.alive() and server.ready(), timeout, "alertmanager", log=proc.log)
    except Exception:
        server.stop(remove_data=False)
        raise
    return server


if __name__ == "__main__":  # pragma: no cover
    import time

    s = start()
    print(s.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
