"""Start ``obsflow ui``: load the spec, open the reader, serve the app with uvicorn."""

from __future__ import annotations

import socket
import sys

from ui.data import Reader

VENDOR = ("echarts.min.js", "htmx.min.js")


def missing_assets() -> list[str]:
    """The browser libraries not built into ui/static/vendor/ (``make ui-assets`` builds them)."""
    from ui.app import STATIC

    return [n for n in VENDOR if not (STATIC / "vendor" / n).exists()]


def load(spec_path: str, warehouse: str | None):
    """The spec, with ``warehouse`` (a local path: embedded SQLite catalog) overriding its catalog."""
    from pipelines.loader import load_spec

    spec = load_spec(spec_path)
    if warehouse:
        catalog = spec.storage.catalog.model_copy(update={"warehouse": warehouse, "uri": None})
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"catalog": catalog})})
    return spec


def serve(
    spec_path: str, warehouse: str | None, host: str, port: int, backend: str = "duckdb", trino_url: str | None = None
) -> int:
    """Serve until interrupted; prints ``obsflow ui: http://HOST:PORT/`` once listening
    (port 0 picks a free port). Returns 2 when the browser libraries are not built."""
    import uvicorn

    from sinks.catalog import catalog_properties
    from ui.app import create_app

    gone = missing_assets()
    if gone:
        print(
            f"obsflow ui: {', '.join(gone)} not built into ui/static/vendor/: run `make ui-assets` (npm)",
            file=sys.stderr,
        )
        return 2
    spec = load(spec_path, warehouse)
    catalog_properties(spec.storage, create=False)  # a warehouse that does not exist: NoWarehouseError, exit 2
    reader = Reader(spec, backend, trino_url)
    app = create_app(spec, reader)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    real = sock.getsockname()[1]
    print(f"obsflow ui: http://{host}:{real}/ ({backend}; Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        reader.close()
    return 0
