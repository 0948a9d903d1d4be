"""Read the Iceberg tables with DuckDB, embedded and offline.

The Iceberg and Avro DuckDB extensions come from their PyPI wheels and are loaded from
the files those wheels ship (no extension download). Each table of the spec's namespace
becomes a view ``<namespace>.<table>`` over its current metadata file."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import duckdb

from pipelines.spec import PipelineSpec
from sinks.catalog import catalog_properties, open_catalog


def _extension(module) -> str:
    found = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*", "*.duckdb_extension"))
    if not found:
        raise RuntimeError(f"the DuckDB extension wheel {module.__name__} ships no extension file; reinstall it matching duckdb {duckdb.__version__}")
    return found[0]


def connect(spec: PipelineSpec) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per existing table: ``obs.events``, ``obs.logs`` ..."""
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
    catalog = open_catalog(spec.storage, create=False)
    existing = {ident[-1] for ident in catalog.list_tables(ns)} if ns in {n[0] for n in catalog.list_namespaces()} else set()
    for name in sorted(existing):
        table = catalog.load_table(f"{ns}.{name}")
        location = table.metadata_location
        if location.startswith("file://"):
            location = location[len("file://"):]
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
    if props.get("s3.path-style-access", "").lower() == "true" or props.get("s3.force-virtual-addressing", "").lower() == "false":
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
    con = connect(spec)
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description] if cur.description else []
    return cols, cur.fetchall()
