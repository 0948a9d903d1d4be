"""How the UI reads the tables: DuckDB embedded (default) or Trino (shared storage), with
the same SQL, and a result cache keyed by the snapshot ids of the tables a query names.

Tables are named ``obs.<table>`` in every query (the spec's namespace): DuckDB gets a view
per table over its current metadata file; Trino runs with catalog ``iceberg`` (the
catalog name ``infra/trino.py`` gives the shared Iceberg catalog)."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.query import _named_tables


@dataclass
class TableMeta:
    """One table as its Iceberg metadata says: current snapshot, last commit time, rows,
    data files and snapshots kept (from the current snapshot's summary)."""

    name: str
    location: str
    snapshot_id: int | None
    last_commit_ms: int | None
    rows: int | None
    files: int | None
    snapshots: int
    commits: list[dict] = field(default_factory=list)  # every kept snapshot: snapshot-id, timestamp-ms, summary


@dataclass
class Result:
    """A query's answer: column names, rows, the snapshot ids it read, and whether it came
    from the cache; ``missing`` names tables that do not exist or hold no snapshot yet
    (the query was not run: there is nothing to read)."""

    columns: list[str]
    rows: list[tuple]
    snapshots: dict[str, int | None] = field(default_factory=dict)
    cached: bool = False
    ms: float = 0.0
    missing: list[str] = field(default_factory=list)


def _meta_from_json(name: str, location: str, meta: dict) -> TableMeta:
    commits = [
        {"snapshot-id": s.get("snapshot-id"), "timestamp-ms": s.get("timestamp-ms"), "summary": s.get("summary") or {}}
        for s in meta.get("snapshots") or []
    ]
    snap_id = meta.get("current-snapshot-id")
    if snap_id in (None, -1):
        return TableMeta(name, location, None, None, 0, 0, len(meta.get("snapshots") or []), commits)
    snap: dict = next((s for s in meta.get("snapshots") or [] if s.get("snapshot-id") == snap_id), {})
    summary = snap.get("summary") or {}

    def num(key: str) -> int | None:
        try:
            return int(summary[key])
        except (KeyError, TypeError, ValueError):
            return None

    return TableMeta(
        name,
        location,
        snap_id,
        snap.get("timestamp-ms"),
        num("total-records"),
        num("total-data-files"),
        len(meta.get("snapshots") or []),
        commits,
    )


class Reader:
    """Runs the UI's SQL on one backend (``duckdb`` or ``trino``) and caches answers by
    (SQL, snapshot ids of the tables the SQL names): a commit to a table makes every cached
    answer over it stale, nothing else does. Thread-safe (one query at a time per reader)."""

    def __init__(self, spec, backend: str = "duckdb", trino_url: str | None = None, cache_size: int = 512) -> None:
        if backend not in ("duckdb", "trino"):
            raise ValueError(f"unknown backend {backend!r}: expected duckdb or trino")
        if backend == "trino" and not trino_url:
            raise ValueError("the trino backend needs a Trino URL (http://host:port)")
        self.spec = spec
        self.backend = backend
        self.trino_url = trino_url
        self.ns = spec.storage.namespace
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, Result] = OrderedDict()
        self._cache_size = cache_size
        self._con: Any = None  # a duckdb connection, opened on first use
        self._views: dict[str, str] = {}
        self._meta_cache: dict[str, TableMeta] = {}
        self._local: bool | None = None
        self._catalog: Any = None  # a pyiceberg catalog, opened on first use

    # -- table metadata ---------------------------------------------------------------
    def tables(self) -> dict[str, TableMeta]:
        """Every table of the namespace with its current metadata (read fresh each call:
        the catalog row for a local SQLite catalog, pyiceberg's catalog otherwise)."""
        from runners.query import _local_tables
        from sinks.catalog import catalog_properties

        props = catalog_properties(self.spec.storage, create=False)
        local = _local_tables(props, self.spec.storage.catalog.name, self.ns)
        out: dict[str, TableMeta] = {}
        if local is not None:
            for name, loc in sorted(local.items()):
                cached = self._meta_cache.get(name)
                if cached is None or cached.location != loc:
                    cached = _meta_from_json(name, loc, json.loads(Path(loc).read_text()))
                    self._meta_cache[name] = cached
                out[name] = cached
            return out
        if self._catalog is None:
            from sinks.catalog import open_catalog

            self._catalog = open_catalog(self.spec.storage, create=False)
        cat = self._catalog
        if self.ns not in {n[0] for n in cat.list_namespaces()}:
            return {}
        for ident in sorted(cat.list_tables(self.ns)):
            name = ident[-1]
            t = cat.load_table(f"{self.ns}.{name}")
            loc = t.metadata_location
            cached = self._meta_cache.get(name)
            if cached is None or cached.location != loc:
                cached = _meta_from_json(name, loc, json.loads(t.metadata.model_dump_json(by_alias=True)))
                self._meta_cache[name] = cached
            out[name] = cached
        return out

    # -- queries ----------------------------------------------------------------------
    def run(self, sql: str, fresh: bool = False) -> Result:
        """``sql``'s answer (from the cache when no table it names has a new snapshot,
        unless ``fresh``: then it runs again and replaces the cached answer).
        Tables it names that do not exist or have no snapshot yet are listed in
        ``missing`` and the query is not run (empty answer)."""
        with self._lock:
            metas = self.tables()
            named = sorted(_named_tables(sql, self.ns))
            missing = [t for t in named if t not in metas or metas[t].snapshot_id is None]
            snaps = {t: metas[t].snapshot_id for t in named if t in metas}
            if missing:
                return Result([], [], snaps, missing=missing)
            key = (sql, tuple(sorted(snaps.items())))
            hit = None if fresh else self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return Result(hit.columns, hit.rows, hit.snapshots, True, 0.0)
            t0 = time.perf_counter()
            if self.backend == "duckdb":
                cols, rows = self._duckdb(sql, {t: metas[t] for t in named})
            else:
                cols, rows = self._trino(sql)
            res = Result(cols, rows, snaps, False, (time.perf_counter() - t0) * 1000)
            self._cache[key] = res
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return res

    def _duckdb(self, sql: str, metas: dict[str, TableMeta]) -> tuple[list[str], list[tuple]]:
        from runners.query import connect, sql_string

        if self._con is None:
            self._con = connect(self.spec, "SELECT 1")  # extensions (and S3 settings) only
            self._con.execute("SET TimeZone = 'UTC'")
            self._views = {}
        con = self._con
        for name, m in metas.items():
            if self._views.get(name) != m.location:
                loc = m.location.removeprefix("file://")
                con.execute(
                    f'CREATE OR REPLACE VIEW "{self.ns}"."{name}" AS SELECT * FROM iceberg_scan({sql_string(loc)})'
                )
                self._views[name] = m.location
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()

    def _trino(self, sql: str) -> tuple[list[str], list[tuple]]:
        from urllib.parse import urlparse

        import trino

        u = urlparse(self.trino_url)
        conn = trino.dbapi.connect(
            host=u.hostname,
            port=u.port or 8080,
            user="obsflow-ui",
            catalog="iceberg",
            schema=self.ns,
            http_scheme=u.scheme or "http",
        )
        try:
            cur = conn.cursor()
            cur.execute(sql)
            rows = [tuple(r) for r in cur.fetchall()]
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, rows
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def jsonable(v: Any) -> Any:
    """A cell as JSON: timestamps as ISO-8601 text, bytes as their UTF-8 text (invalid
    bytes replaced), maps as objects, lists as arrays, non-finite floats as null."""
    import datetime as dt
    import decimal
    import math

    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return str(v)
