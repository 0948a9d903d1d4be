"""Open the Iceberg catalog a spec names and create its tables on first use."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, unquote

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.table import Table

from pipelines.spec import StorageSpec
from schemas.tables import TableDef, table_def

log = logging.getLogger(__name__)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, key_path: str) -> str:
    """Replace ``${VAR}`` with the environment's value, so credentials live in the
    environment, not in the spec. A missing variable is an error naming the key path."""
    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"{key_path}: refers to ${{{name}}}, but the environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


def catalog_properties(storage: StorageSpec) -> dict[str, str]:
    """pyiceberg properties for the spec's catalog, with ``${VAR}`` references expanded.
    A local warehouse path becomes an absolute ``file://`` URL with a SQLite catalog
    inside it unless ``uri`` is given."""
    cat = storage.catalog
    wh = expand_env(cat.warehouse, "storage.catalog.warehouse")
    props = {k: expand_env(v, f"storage.catalog.properties.{k}") for k, v in cat.properties.items()}
    if "://" not in wh:
        path = Path(wh).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        wh = path.as_uri()
        uri = expand_env(cat.uri, "storage.catalog.uri") if cat.uri else f"sqlite:///{path / 'catalog.db'}"
    else:
        uri = expand_env(cat.uri, "storage.catalog.uri") if cat.uri else None
        if uri is None:
            raise ValueError("storage.catalog.uri: expected a SQLAlchemy URL when the warehouse is not a local path")
    props.update({"uri": uri, "warehouse": wh})
    return props


def open_catalog(storage: StorageSpec) -> Catalog:
    """The spec's SQL catalog (SQLite or PostgreSQL; the JDBC catalog's table layout)."""
    props = catalog_properties(storage)
    try:
        for attempt in range(5):
            try:
                catalog = SqlCatalog(storage.catalog.name, **props)
                break
            except Exception as e:
                # writers starting together race on CREATE TABLE IF NOT EXISTS of the catalog tables
                if "already exists" not in str(e) and "unique constraint" not in str(e) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        if not props["uri"].startswith("sqlite"):
            with catalog.engine.connect():
                pass
        return catalog
    except Exception as e:  # connection problems: say what to start, never the credentials
        detail = redact(str(e).splitlines()[0], props) if str(e) else type(e).__name__
        raise ConnectionError(
            f"cannot open the Iceberg catalog {storage.catalog.name!r} at {_redact(props['uri'])}: {detail}. "
            f"Is the catalog database running? (local: python -m infra.postgres start)") from None


def _secrets(props: dict[str, str]) -> list[str]:
    out = [v for k, v in props.items() if any(w in k for w in ("secret", "password", "key-id", "token")) and v]
    uri = props.get("uri", "")
    if "://" in uri and "@" in uri:
        userinfo = uri.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in userinfo:
            out.append(userinfo.split(":", 1)[1])
    out += [unquote(s) for s in out] + [quote(s, safe="") for s in out]
    # longest first, so a secret containing another is replaced whole
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, props: dict[str, str]) -> str:
    """``text`` with the catalog's credentials (S3 keys, tokens, the catalog database's
    password, raw or URL-quoted) replaced by ``***`` and URL user info removed: for
    messages that quote a driver's or a storage client's error."""
    for secret in _secrets(props):
        text = text.replace(secret, "***")
    return _USERINFO.sub(r"\1***@", text)


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def _redact(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


#: pyiceberg's own commit retries, off (see _ensure_table)
NO_RETRIES = ("commit.retry.num-retries", "0")


def ensure_table(catalog: Catalog, namespace: str, tdef: TableDef, retention_override=None,
                 busy_timeout_s: float = 60.0) -> Table:
    """Load ``namespace.name``, creating namespace and table (with partition spec, sort
    order and retention property) if missing. Safe when several writers race: losing a
    creation race loads the winner's table, and a catalog database that is busy (SQLite's
    "database is locked" while other processes write) is retried for ``busy_timeout_s``."""
    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            return _ensure_table(catalog, namespace, tdef, retention_override)
        except OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create ``namespace`` unless it exists. pyiceberg's SQL catalog checks, then inserts:
    a writer that loses that race between two processes gets the database's unique-key
    error (``IntegrityError``), not ``NamespaceAlreadyExistsError``; the namespace the
    winner created is what we wanted."""
    from sqlalchemy.exc import IntegrityError

    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except IntegrityError:
        if not catalog.namespace_exists(namespace):
            raise


def _ensure_table(catalog: Catalog, namespace: str, tdef: TableDef, retention_override=None) -> Table:
    _ensure_namespace(catalog, namespace)
    ident = f"{namespace}.{tdef.name}"
    retention = retention_override or tdef.retention
    props = {
        "write.parquet.compression-codec": "zstd",
        # keep the metadata log short: a streaming writer commits every few seconds
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": "20",
        # no pyiceberg-internal commit retries: they re-apply the append with the snapshot
        # properties computed before the conflict, so the recorded positions (obsflow.offsets)
        # of the writer that won would be overwritten. The sink and maintenance retry
        # themselves, re-reading and merging the positions.
        NO_RETRIES[0]: NO_RETRIES[1],
        "obsflow.retention-seconds": str(int(retention.total_seconds())),
        "obsflow.time-column": tdef.time_column,
        "comment": tdef.doc,
    }
    if catalog.table_exists(ident):
        return _no_internal_retries(catalog, _add_new_columns(catalog, catalog.load_table(ident), tdef))
    try:
        return catalog.create_table(ident, schema=tdef.schema, partition_spec=tdef.partition_spec(),
                                    sort_order=tdef.sort_order(), properties=props)
    except TableAlreadyExistsError:
        return catalog.load_table(ident)


def _add_new_columns(catalog: Catalog, table: Table, tdef: TableDef) -> Table:
    """Add the optional columns ``tdef`` declares that a table created by an earlier
    version lacks (e.g. ``dead_letters.item_index``); another writer adding them first is fine."""
    have = {f.name for f in table.schema().fields}
    missing = [f for f in tdef.schema.fields if f.name not in have and not f.required]
    if not missing:
        return table
    try:
        with table.update_schema() as update:
            for f in missing:
                update.add_column(f.name, f.field_type, doc=f.doc)
    except (CommitFailedException, ValueError):
        pass  # added concurrently: reload
    return catalog.load_table(table.name())


def _no_internal_retries(catalog: Catalog, table: Table) -> Table:
    """Set ``commit.retry.num-retries = 0`` on a table created before obsflow set it at
    creation (see :func:`_ensure_table`); another writer setting it first is fine."""
    if table.properties.get(NO_RETRIES[0]) == NO_RETRIES[1]:
        return table
    try:
        with table.transaction() as tx:
            tx.set_properties({NO_RETRIES[0]: NO_RETRIES[1]})
    except CommitFailedException:
        pass  # a concurrent writer committed first (perhaps this very property): reload
    return catalog.load_table(table.name())


def load_tables(catalog: Catalog, storage: StorageSpec, names: list[str]) -> dict[str, Table]:
    out = {}
    for name in names:
        opts = storage.tables.get(name)
        out[name] = ensure_table(catalog, storage.namespace, table_def(name), opts.retention if opts else None)
    return out
