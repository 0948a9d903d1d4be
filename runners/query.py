"""Read the Iceberg tables with DuckDB, embedded and offline.

The Iceberg and Avro DuckDB extensions come from their PyPI wheels and are loaded from
the files those wheels ship (no extension download). Each table of the spec's namespace
becomes a view ``<namespace>.<table>`` over its current metadata file."""

from __future__ import annotations

import glob
import os

import duckdb

from pipelines.spec import PipelineSpec
from sinks.catalog import open_catalog


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
    con.execute(f"LOAD '{_extension(duckdb_extension_iceberg)}'")
    ns = spec.storage.namespace
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
    catalog = open_catalog(spec.storage)
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


def query(spec: PipelineSpec, sql: str):
    """Run ``sql``; return (column names, rows)."""
    con = connect(spec)
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description] if cur.description else []
    return cols, cur.fetchall()
