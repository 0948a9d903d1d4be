"""A real Prometheus Alertmanager (Debian package ``prometheus-alertmanager``) on 127.0.0.1.

``start()`` writes a config (generated from an alerting config's route tree, receivers
and inhibit rules by :func:`config_yaml`) into a fresh directory under the run directory, starts
``/usr/bin/prometheus-alertmanager`` on a free port with clustering disabled
(``--cluster.listen-address=``) and waits for ``GET /-/ready``. Install the binary with
``apt-get install -y prometheus-alertmanager`` (``python -m infra.alertmanager [spec.yaml]``
starts one, with the spec's routing when given, and prints its URL)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from infra.service import LocalHttpServer, free_port, run_dir

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


def config_yaml(alerting) -> str:
    """``alertmanager.yml`` for an alerting config (a :class:`transforms.alerting.AlertingConfig`,
    the spec's ``alerts`` section, or a dict of one): its route tree, receivers and inhibit
    rules, so the real Alertmanager routes as the pipeline's own dispatcher does."""
    from transforms.alerting import AlertingConfig

    if isinstance(alerting, dict):
        alerting = AlertingConfig(**alerting)
    return alerting.alertmanager_yaml()


# The default server's routing: the default route tree (P0/P1 → pager, P2 → ticket, else
# default) with short timers, and a P0-mutes-P2 inhibition on equal service.
DEFAULT_ALERTING = {
    "route": {
        "receiver": "default",
        "group_by": ["alertname"],
        "group_wait": "1s",
        "group_interval": "5s",
        "repeat_interval": "1h",
        "routes": [
            {"matchers": ['severity=~"P0|P1"'], "receiver": "pager"},
            {"matchers": ['severity="P2"'], "receiver": "ticket"},
        ],
    },
    "inhibit_rules": [
        {"source_matchers": ['severity="P0"'], "target_matchers": ['severity="P2"'], "equal": ["service"]}
    ],
}
DEFAULT_CONFIG = config_yaml(DEFAULT_ALERTING)


def binary() -> str:
    for name in BINARY_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("Alertmanager is not installed: apt-get install -y prometheus-alertmanager")


class AlertmanagerServer(LocalHttpServer):
    """Alertmanager on 127.0.0.1 (see the module docstring)."""


def start(config: str | None = None, timeout: float = 30.0, alerting=None) -> AlertmanagerServer:
    """Start one Alertmanager with ``config`` (YAML text), or the config generated from
    ``alerting`` (:func:`config_yaml`), else :data:`DEFAULT_CONFIG`."""
    text = config if config is not None else config_yaml(alerting) if alerting is not None else DEFAULT_CONFIG
    directory = Path(tempfile.mkdtemp(prefix="alertmanager-", dir=run_dir("alertmanager")))
    (directory / "alertmanager.yml").write_text(text)
    (directory / "data").mkdir()
    port = free_port()
    argv = [
        binary(),
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return AlertmanagerServer.launch("alertmanager", argv, port, directory, timeout)


if __name__ == "__main__":  # pragma: no cover
    import sys
    import time

    # python -m infra.alertmanager [spec.yaml]: routing from the spec's alerts section (default: DEFAULT_CONFIG)
    alerting = None
    if len(sys.argv) > 1:
        from pipelines.loader import load_spec

        spec = load_spec(sys.argv[1])
        if spec.alerts is None:
            raise SystemExit(f"{sys.argv[1]}: the spec has no alerts section to route from")
        alerting = spec.alerts.engine_config()
    s = start(alerting=alerting)
    print(s.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
