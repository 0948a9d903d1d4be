"""Open the Iceberg catalog a spec names and create its tables on first use."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from core.errors import ConfigurationError

if TYPE_CHECKING:  # imported where used: `obsflow query` reads a local catalog without pyiceberg
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from pipelines.spec import StorageSpec
    from schemas.tables import TableDef

log = logging.getLogger(__name__)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingEnvError(ConfigurationError, ValueError):
    """A ``${VAR}`` reference in the spec to an environment variable that is not set."""


def expand_env(value: str, key_path: str) -> str:
    """Replace ``${VAR}`` with the environment's value, so credentials live in the
    environment, not in the spec. A missing variable is an error naming the key path."""

    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            raise MissingEnvError(f"{key_path}: refers to ${{{name}}}, but the environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


class NoWarehouseError(ConfigurationError, LookupError):
    """A local warehouse that is not there: a reader (``obsflow query``, ``tables``) was
    pointed at a directory that does not exist (it is never created for them), or the
    path is a file."""


def catalog_properties(storage: StorageSpec, create: bool = True) -> dict[str, str]:
    """pyiceberg properties for the spec's catalog, with ``${VAR}`` references expanded.
    A local warehouse path becomes an absolute ``file://`` URL with a SQLite catalog
    inside it unless ``uri`` is given. The directory is created unless ``create`` is
    false; then a local warehouse (or SQLite catalog file) that does not exist raises
    :class:`NoWarehouseError`."""
    cat = storage.catalog
    wh = expand_env(cat.warehouse, "storage.catalog.warehouse")
    props = {k: expand_env(v, f"storage.catalog.properties.{k}") for k, v in cat.properties.items()}
    if "://" not in wh:
        path = Path(wh).expanduser().resolve()
        uri = expand_env(cat.uri, "storage.catalog.uri") if cat.uri else f"sqlite:///{path / 'catalog.db'}"
        if not create:
            _must_exist(path, uri)
        elif path.exists() and not path.is_dir():
            raise NoWarehouseError(f"storage.catalog.warehouse: {path} is a file, not a directory")
        else:
            path.mkdir(parents=True, exist_ok=True)
        wh = path.as_uri()
    else:
        if not cat.uri:
            raise ValueError("storage.catalog.uri: expected a SQLAlchemy URL when the warehouse is not a local path")
        uri = expand_env(cat.uri, "storage.catalog.uri")
    props.update({"uri": uri, "warehouse": wh})
    return props


def _must_exist(path: Path, uri: str) -> None:
    """Raise :class:`NoWarehouseError` unless the local warehouse ``path`` and its SQLite
    catalog (``uri``, when it is a SQLite file) exist."""
    db = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if path.is_dir() and (db is None or db.is_file()):
        return
    what = f"no warehouse at {path}" if not path.is_dir() else f"no Iceberg catalog at {db} (warehouse {path})"
    raise NoWarehouseError(
        f"{what} (storage.catalog.warehouse): nothing has been written there; run `obsflow run` "
        f"to create it, or name an existing one with --warehouse or the spec"
    )


class NoBucketError(ConfigurationError, LookupError):
    """The S3 bucket of the spec's warehouse does not exist."""


def s3_filesystem(props: dict[str, str], allow_bucket_creation: bool = False):
    """A ``pyarrow.fs.S3FileSystem`` from pyiceberg-style ``s3.*`` catalog properties."""
    from urllib.parse import urlparse

    from pyarrow import fs

    kw = {
        "region": props.get("s3.region", "us-east-1"),
        "connect_timeout": 5,
        "request_timeout": 10,
        "allow_bucket_creation": allow_bucket_creation,
    }
    if props.get("s3.access-key-id"):
        kw.update(access_key=props["s3.access-key-id"], secret_key=props.get("s3.secret-access-key", ""))
    endpoint = props.get("s3.endpoint")
    if endpoint:
        u = urlparse(endpoint)
        kw.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
    if (
        props.get("s3.path-style-access", "").lower() == "true"
        or props.get("s3.force-virtual-addressing", "").lower() == "false"
    ):
        kw["force_virtual_addressing"] = False
    return fs.S3FileSystem(**kw)


def check_bucket(storage: StorageSpec, spec_arg: str | None = None) -> None:
    """For a warehouse on S3 (``s3://bucket/...``): raise :class:`NoBucketError` naming the
    bucket and how to create it when it does not exist, ``ConnectionError`` when the S3
    endpoint does not answer. Nothing for a local warehouse."""
    from pyarrow import fs

    if not expand_env(storage.catalog.warehouse, "storage.catalog.warehouse").startswith(("s3://", "s3a://")):
        return
    props = catalog_properties(storage)
    wh = props["warehouse"]
    bucket = wh.split("://", 1)[1].split("/", 1)[0]
    where = props.get("s3.endpoint") or "AWS S3"
    try:
        info = s3_filesystem(props).get_file_info(bucket)
    except OSError as e:
        raise ConnectionError(
            f"S3 at {where} did not answer for bucket {bucket!r} (storage.catalog.warehouse): "
            f"{redact(str(e).splitlines()[0], props)}. Is it running? (local: python -m infra.s3 start)"
        ) from None
    if info.type == fs.FileType.NotFound:
        spec = f" --spec {spec_arg}" if spec_arg else " --spec FILE"
        raise NoBucketError(
            f"S3 bucket {bucket!r} of storage.catalog.warehouse ({wh}) does not exist at {where}: "
            f"create it, e.g. `python -m infra.s3 create-bucket{spec}` (uses the spec's S3 settings) "
            f"or `aws s3 mb s3://{bucket}`"
        )


def open_catalog(storage: StorageSpec, create: bool = True) -> Catalog:
    """The spec's SQL catalog (SQLite or PostgreSQL; the JDBC catalog's table layout).
    With ``create`` false, a local warehouse that does not exist raises
    :class:`NoWarehouseError` instead of being created."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = catalog_properties(storage, create)
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
            f"Is the catalog database running? (local: python -m infra.postgres start)"
        ) from None


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


def ensure_table(
    catalog: Catalog, namespace: str, tdef: TableDef, retention_override=None, busy_timeout_s: float = 60.0
) -> Table:
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
    from pyiceberg.exceptions import NamespaceAlreadyExistsError
    from sqlalchemy.exc import IntegrityError

    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except IntegrityError:
        if not catalog.namespace_exists(namespace):
            raise


def _ensure_table(catalog: Catalog, namespace: str, tdef: TableDef, retention_override=None) -> Table:
    from pyiceberg.exceptions import TableAlreadyExistsError

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
        return catalog.create_table(
            ident,
            schema=tdef.schema,
            partition_spec=tdef.partition_spec(),
            sort_order=tdef.sort_order(),
            properties=props,
        )
    except TableAlreadyExistsError:
        return catalog.load_table(ident)


def _add_new_columns(catalog: Catalog, table: Table, tdef: TableDef) -> Table:
    """Add the optional columns ``tdef`` declares that a table created by an earlier
    version lacks (e.g. ``dead_letters.item_index``); another writer adding them first is fine."""
    from pyiceberg.exceptions import CommitFailedException

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
    from pyiceberg.exceptions import CommitFailedException

    if table.properties.get(NO_RETRIES[0]) == NO_RETRIES[1]:
        return table
    try:
        with table.transaction() as tx:
            tx.set_properties({NO_RETRIES[0]: NO_RETRIES[1]})
    except CommitFailedException:
        pass  # a concurrent writer committed first (perhaps this very property): reload
    return catalog.load_table(table.name())


def load_tables(catalog: Catalog, storage: StorageSpec, names: list[str]) -> dict[str, Table]:
    from schemas.tables import table_def

    out = {}
    for name in names:
        opts = storage.tables.get(name)
        out[name] = ensure_table(catalog, storage.namespace, table_def(name), opts.retention if opts else None)
    return out
