"""Read the Iceberg tables with DuckDB, embedded and offline.

The Iceberg and Avro DuckDB extensions come from their PyPI wheels and are loaded from
the files those wheels ship (no extension download). Each table of the spec's namespace
becomes a view ``<namespace>.<table>`` over its current metadata file."""

from __future__ import annotations

import glob
import json
import os
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from sinks.catalog import catalog_properties, open_catalog

if TYPE_CHECKING:
    from pipelines.spec import PipelineSpec


def _extension(module) -> str:
    found = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*", "*.duckdb_extension"))
    if not found:
        raise RuntimeError(
            f"the DuckDB extension wheel {module.__name__} ships no extension file; reinstall it matching duckdb {duckdb.__version__}"
        )
    return found[0]


def _local_tables(props: dict[str, str], catalog_name: str, ns: str) -> dict[str, str] | None:
    """``{table: metadata file}`` read straight from a local SQLite catalog (the JDBC
    catalog layout pyiceberg writes: ``iceberg_tables``), without loading pyiceberg and
    every table's metadata; None when the catalog is not a local SQLite file."""
    uri, wh = props["uri"], props["warehouse"]
    if not uri.startswith("sqlite:///") or not wh.startswith("file://"):
        return None
    con = sqlite3.connect(f"file:{uri[len('sqlite:///') :]}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ?",
            (catalog_name, ns),
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # no iceberg_tables yet: nothing was ever written
    finally:
        con.close()
    out = {}
    for name, loc in rows:
        if not loc.startswith("file://"):
            return None
        out[name] = loc[len("file://") :]
    return out


def _named_tables(sql: str, ns: str) -> set[str]:
    """The ``<ns>.<table>`` names a query mentions (quoted or not), lower-cased."""
    rx = re.compile(rf'(?<![\w"]){re.escape(ns)}"?\s*\.\s*"?([A-Za-z_][A-Za-z0-9_]*)', re.IGNORECASE)
    return {m.group(1).lower() for m in rx.finditer(sql)}


def _local_view(con, ns: str, name: str, metadata_file: str) -> None:
    """A view over one table from its metadata file: ``iceberg_scan`` when it has a
    snapshot, else an empty relation with the table's columns (as VARCHAR)."""
    meta = json.loads(Path(metadata_file).read_text())
    snap = meta.get("current-snapshot-id")
    if snap is None or snap == -1:
        schema = next(s for s in meta["schemas"] if s["schema-id"] == meta.get("current-schema-id", 0))
        cols = ", ".join(f'NULL::VARCHAR AS "{f["name"]}"' for f in schema["fields"])
        con.execute(f'CREATE VIEW "{ns}"."{name}" AS SELECT {cols} WHERE false')
    else:
        con.execute(f"""CREATE VIEW "{ns}"."{name}" AS SELECT * FROM iceberg_scan({sql_string(metadata_file)})""")


def connect(spec: PipelineSpec, sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per existing table: ``obs.events``, ``obs.logs`` ...
    Never creates a warehouse (:class:`sinks.catalog.NoWarehouseError`). On a local
    warehouse with its SQLite catalog, given the ``sql`` to run, only the tables it names
    get views, read from the catalog file directly (what a one-row query pays is DuckDB's
    own scan, not pyiceberg's import and every table's metadata)."""
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute(f"LOAD '{_extension(duckdb_extension_avro)}'")
    props = catalog_properties(spec.storage, create=False)
    if props["warehouse"].startswith(("s3://", "s3a://")):
        import duckdb_extension_httpfs

        con.execute(f"LOAD '{_extension(duckdb_extension_httpfs)}'")
        _s3_secret(con, props)
    con.execute(f"LOAD '{_extension(duckdb_extension_iceberg)}'")
    ns = spec.storage.namespace
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
    local = _local_tables(props, spec.storage.catalog.name, ns)
    if local is not None:
        wanted = _named_tables(sql, ns) if sql is not None else set(local)
        for name in sorted(local):
            if name.lower() in wanted:
                _local_view(con, ns, name, local[name])
        return con
    catalog = open_catalog(spec.storage, create=False)
    existing = (
        {ident[-1] for ident in catalog.list_tables(ns)} if ns in {n[0] for n in catalog.list_namespaces()} else set()
    )
    for name in sorted(existing):
        table = catalog.load_table(f"{ns}.{name}")
        location = table.metadata_location
        if location.startswith("file://"):
            location = location[len("file://") :]
        if table.current_snapshot() is None:
            cols = ", ".join(f'NULL::VARCHAR AS "{f.name}"' for f in table.schema().fields)
            con.execute(f'CREATE VIEW "{ns}"."{name}" AS SELECT {cols} WHERE false')
        else:
            con.execute(f"""CREATE VIEW "{ns}"."{name}" AS SELECT * FROM iceberg_scan('{location}')""")
    return con


def _s3_secret(con, props: dict[str, str]) -> None:
    """Give DuckDB the catalog's S3 settings (endpoint, path-style access, credentials)."""
    from urllib.parse import urlparse

    from sinks.catalog import redact

    endpoint = props.get("s3.endpoint")
    parts = ["TYPE s3"]
    if props.get("s3.access-key-id"):
        parts.append(f"KEY_ID {sql_string(props['s3.access-key-id'])}")
        parts.append(f"SECRET {sql_string(props.get('s3.secret-access-key', ''))}")
    parts.append(f"REGION {sql_string(props.get('s3.region', 'us-east-1'))}")
    if endpoint:
        u = urlparse(endpoint)
        parts.append(f"ENDPOINT {sql_string(u.netloc)}")
        parts.append(f"USE_SSL {'true' if u.scheme == 'https' else 'false'}")
    if (
        props.get("s3.path-style-access", "").lower() == "true"
        or props.get("s3.force-virtual-addressing", "").lower() == "false"
    ):
        parts.append("URL_STYLE 'path'")
    try:
        con.execute(f"CREATE OR REPLACE SECRET obsflow_s3 ({', '.join(parts)})")
    except duckdb.Error as e:  # the statement holds the credentials: never echo it
        raise RuntimeError(f"cannot give DuckDB the S3 settings: {redact(str(e), props)}") from None


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal: quotes doubled, so any character is safe inside it."""
    if "\x00" in value:
        raise ValueError("a NUL character cannot be passed in a SQL string")
    return "'" + value.replace("'", "''") + "'"


QUERIES = Path(__file__).resolve().parent.parent / "pipelines" / "queries"


def saved_query(name: str) -> str:
    """The SQL of a saved query (``pipelines/queries/<name>.sql``); runs in Trino and DuckDB."""
    path = QUERIES / f"{name}.sql"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in QUERIES.glob("*.sql")))
        raise KeyError(f"no saved query {name!r}; saved queries: {known}")
    return path.read_text()


def query(spec: PipelineSpec, sql: str):
    """Run ``sql``; return (column names, rows)."""
    con = connect(spec, sql)
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description] if cur.description else []
    return cols, cur.fetchall()


def _cache_dir() -> Path:
    return Path(os.environ.get("OBSFLOW_CACHE") or Path.home() / ".cache" / "obsflow") / "specs"


def reader_spec(spec_path: str, warehouse: str | None, load):
    """What a reader (``obsflow query``) needs of a spec: its ``storage`` settings (as
    ``.storage.catalog`` / ``.storage.namespace``). The first call for a spec file's
    exact bytes (and ``warehouse`` override) validates the whole spec with ``load()``
    (a wrong spec fails there, with its key paths) and keeps those settings in the cache
    directory; later calls read them back, so a query does not import and validate the
    whole spec model (about a second) each time."""
    from types import SimpleNamespace

    cached = _cache_file(spec_path, warehouse)
    if cached is None:
        return load()  # the loader says what is wrong with the path
    try:
        st = json.loads(cached.read_text())
        return SimpleNamespace(
            storage=SimpleNamespace(catalog=SimpleNamespace(**st["catalog"]), namespace=st["namespace"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    spec = load()
    remember_spec(spec_path, warehouse, spec)
    return spec


def _cache_file(spec_path: str, warehouse: str | None) -> Path | None:
    """Where the storage settings of this spec file's exact bytes (and ``warehouse``
    override) are kept; None when the file cannot be read."""
    import hashlib

    try:
        data = Path(spec_path).read_bytes()
    except OSError:
        return None
    key = hashlib.sha256(data + b"\0" + (warehouse or "").encode()).hexdigest()
    return _cache_dir() / f"{key}.json"


def remember_spec(spec_path: str, warehouse: str | None, spec) -> None:
    """Keep the storage settings of ``spec``, just validated from ``spec_path``, for
    :func:`reader_spec` (``obsflow run`` calls this, so the first query after a run is
    fast too). Best effort: without a writable cache directory nothing is kept."""
    cached = _cache_file(spec_path, warehouse)
    if cached is None or cached.exists():
        return
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold catalog properties
        with os.fdopen(fd, "w") as f:
            json.dump({"catalog": spec.storage.catalog.model_dump(mode="json"), "namespace": spec.storage.namespace}, f)
        os.replace(tmp, cached)
    except OSError:
        pass  # no cache: the next query validates again
