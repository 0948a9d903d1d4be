"""Run the door: ``obsflow collect`` (uvicorn in this process, or Granian workers).

Prints ``obsflow collect: listening on http://HOST:PORT`` once the socket is bound (port
0 picks a free one). SIGTERM / SIGINT: the door turns not-ready (/readyz and new requests on
open connections answer 503), the listener closes, requests
in flight finish (``collect.drain_timeout``), the producer flushes, the process exits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

from pipelines.collect_spec import CollectSpec
from pipelines.loader import load_spec

if TYPE_CHECKING:
    from collector.app import Door
    from pipelines.spec import PipelineSpec

SPEC_ENV = "OBSFLOW_COLLECT_SPEC"


def _spec(path: str, host: str | None, port: int | None):
    spec = load_spec(path)
    changes = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if changes:
        spec = spec.model_copy(update={"collect": spec.collect.model_copy(update=changes)})
    return spec


def build_door(spec: PipelineSpec) -> Door:
    """The :class:`collector.app.Door` of ``spec``, in a process with the settings of
    :func:`process_settings`, and the process's garbage collector then set by
    ``collect.gc_young_threshold`` (:func:`core.gc_tuning.tune_gc`: what start-up
    made, the door and its producer included, is frozen)."""
    from collector.app import create_app
    from core.gc_tuning import tune_gc

    process_settings(spec.collect)
    door = create_app(spec)
    tune_gc(spec.collect.gc_young_threshold)
    return door


def granian_app():
    """Factory for Granian workers: the app for the spec in ``$OBSFLOW_COLLECT_SPEC``."""
    return build_door(_spec(os.environ[SPEC_ENV], None, None)).asgi


def process_settings(cfg: CollectSpec) -> None:
    """Apply the process-wide settings of ``cfg`` to this process: the GIL switch interval
    (``collect.switch_interval``: how long a writer thread waits for the busy event loop to
    hand over the GIL at each step of a transaction)."""
    sys.setswitchinterval(cfg.switch_interval.total_seconds())


def serve(
    spec_path: str, host: str | None = None, port: int | None = None, server: str | None = None, workers: int = 1
) -> int:
    spec = _spec(spec_path, host, port)
    cfg = spec.collect
    server = server or cfg.server
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        os.environ[SPEC_ENV] = str(spec_path)
        port_ = cfg.port or _free_port(cfg.host)
        print(f"obsflow collect: listening on http://{cfg.host}:{port_}", flush=True)
        Granian(
            "collector.server:granian_app",
            address=cfg.host,
            port=port_,
            interface=Interfaces.ASGI,
            workers=workers,
            factory=True,
            log_enabled=False,
        ).serve()
        return 0
    import uvicorn

    door = build_door(spec)
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    # proxy_headers off: X-Forwarded-For is believed only through collect.trusted_proxies (Door.client_ip), never by
    # uvicorn's own middleware (it trusts loopback by default and would rewrite the peer address)
    config = uvicorn.Config(
        door.asgi,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        timeout_graceful_shutdown=int(cfg.drain_timeout.total_seconds()) or None,
    )
    srv = _Server(config, on_stop=lambda: setattr(door, "draining", True))
    print(f"obsflow collect: listening on http://{cfg.host}:{bound}", flush=True)
    srv.run(sockets=[sock])
    print("obsflow collect: drained, exiting", file=sys.stderr, flush=True)
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        on_stop = None

        """uvicorn's server, but SIGTERM / SIGINT end it with status 0 after the drain
        (uvicorn re-raises the signal after its shutdown, so the exit status would say killed)."""

        @contextlib.contextmanager
        def capture_signals(self):
            def on_signal(sig, frame):
                if self.on_stop is not None:
                    self.on_stop()  # not ready: /readyz and new requests on open connections answer 503
                self.should_exit = True

            old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    return Server


def _Server(config, on_stop=None):
    srv = _server_class()(config)
    srv.on_stop = on_stop
    return srv


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
