"""Open the Iceberg catalog a spec names and create its tables on first use."""

from __future__ import annotations

import logging
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.table import Table

from pipelines.spec import StorageSpec
from schemas.tables import TableDef, table_def

log = logging.getLogger(__name__)


def catalog_properties(storage: StorageSpec) -> dict[str, str]:
    """pyiceberg properties for the spec's catalog. A local warehouse path becomes an
    absolute ``file://`` URL with a SQLite catalog inside it unless ``uri`` is given."""
    cat = storage.catalog
    wh = cat.warehouse
    props = dict(cat.properties)
    if "://" not in wh:
        path = Path(wh).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        wh = path.as_uri()
        uri = cat.uri or f"sqlite:///{path / 'catalog.db'}"
    else:
        uri = cat.uri
        if uri is None:
            raise ValueError("storage.catalog.uri: expected a SQLAlchemy URL when the warehouse is not a local path")
    props.update({"uri": uri, "warehouse": wh})
    return props


def open_catalog(storage: StorageSpec) -> Catalog:
    """The spec's SQL catalog (SQLite or PostgreSQL; the JDBC catalog's table layout)."""
    props = catalog_properties(storage)
    try:
        return SqlCatalog(storage.catalog.name, **props)
    except Exception as e:  # connection problems: say what to start
        raise ConnectionError(f"cannot open the Iceberg catalog {storage.catalog.name!r} at {_redact(props['uri'])}: {e}") from e


def _redact(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def ensure_table(catalog: Catalog, namespace: str, tdef: TableDef, retention_override=None) -> Table:
    """Load ``namespace.name``, creating namespace and table (with partition spec, sort
    order and retention property) if missing. Safe when several writers race."""
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    ident = f"{namespace}.{tdef.name}"
    retention = retention_override or tdef.retention
    props = {
        "write.parquet.compression-codec": "zstd",
        "obsflow.retention-seconds": str(int(retention.total_seconds())),
        "obsflow.time-column": tdef.time_column,
        "comment": tdef.doc,
    }
    if catalog.table_exists(ident):
        return catalog.load_table(ident)
    try:
        return catalog.create_table(ident, schema=tdef.schema, partition_spec=tdef.partition_spec(),
                                    sort_order=tdef.sort_order(), properties=props)
    except TableAlreadyExistsError:
        return catalog.load_table(ident)


def load_tables(catalog: Catalog, storage: StorageSpec, names: list[str]) -> dict[str, Table]:
    out = {}
    for name in names:
        opts = storage.tables.get(name)
        out[name] = ensure_table(catalog, storage.namespace, table_def(name), opts.retention if opts else None)
    return out
