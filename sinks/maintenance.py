"""Table maintenance: retention (with optional archiving), compaction of small files,
snapshot expiry and removal of orphan files — what ``obsflow maintain`` runs.

Every step is safe while the pipeline writes:
- data-changing commits (retention deletes, compaction overwrites) are optimistic: pyiceberg
  asserts the snapshot they were based on, so a concurrent pipeline commit makes them
  fail and they are retried against the refreshed table — no row is lost or doubled;
- they carry the pipeline's recorded source positions (``obsflow.offsets``) forward into
  their own snapshot summaries, so a job restarting after maintenance still resumes exactly;
- orphan removal only deletes files older than ``maintenance.orphan_min_age`` that no
  snapshot and no metadata file references (files of an in-flight commit are young).

pyiceberg's ``expire_snapshots`` only edits metadata; the files it frees are removed by
the orphan step here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, IsNull, LessThan
from pyiceberg.table import Table

from pipelines.spec import PipelineSpec
from schemas.tables import TABLES, TableDef
from sinks.catalog import catalog_properties, ensure_table, open_catalog
from sinks.iceberg import OFFSETS_KEY

log = logging.getLogger(__name__)

ARCHIVED_THROUGH = "obsflow.archived-through"


@dataclass
class TableReport:
    """What maintenance did to one table."""

    table: str
    expired_rows: int = 0
    archived_rows: int = 0
    compacted_partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    expired_snapshots: int = 0
    orphan_files: int = 0
    orphan_bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def _carry(table: Table) -> dict[str, str]:
    """Snapshot properties that keep the pipeline's recorded positions on a maintenance commit."""
    snap = table.current_snapshot()
    if snap is None or snap.summary is None:
        return {}
    props = snap.summary.additional_properties
    return {k: props[k] for k in (OFFSETS_KEY, ARCHIVED_THROUGH) if props.get(k)}


def _retrying(catalog: Catalog, table: Table, report: TableReport, fn, attempts: int = 10):
    """Run ``fn(table)``; on a commit conflict reload the table and run it again."""
    for attempt in range(attempts):
        try:
            return fn(table)
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            report.retries += 1
            time.sleep(min(0.05 * 2 ** attempt, 2.0))
            table = catalog.load_table(table.name())
    return None


def _data_files(table: Table) -> pa.Table:
    if table.current_snapshot() is None:
        return pa.table({"file_path": pa.array([], pa.string())})
    return table.inspect.files()


# -- retention -----------------------------------------------------------------------

def _archive_table(catalog: Catalog, spec: PipelineSpec, tdef: TableDef) -> Table:
    opts = spec.storage.tables[tdef.name].archive
    ns = spec.storage.namespace
    name = f"{tdef.name}_archive"
    ident = f"{ns}.{name}"
    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        pass
    location = opts.location
    if location is None:
        wh = catalog_properties(spec.storage)["warehouse"].rstrip("/")
        location = f"{wh}/archive/{ns}/{name}"
    props = {"write.parquet.compression-codec": "zstd", "obsflow.retention-seconds": str(int(opts.retention.total_seconds())),
             "obsflow.time-column": tdef.time_column, "obsflow.archive-of": tdef.name}
    return catalog.create_table(ident, schema=tdef.schema, partition_spec=tdef.partition_spec(), sort_order=tdef.sort_order(),
                                location=location, properties=props)


def apply_retention(catalog: Catalog, spec: PipelineSpec, table: Table, tdef: TableDef, now: datetime, report: TableReport) -> Table:
    """Delete rows whose time column is older than the table's retention, archiving them
    first when the spec asks. Deletes aligned to day partitions drop whole files."""
    opts = spec.storage.tables.get(tdef.name)
    seconds = int(table.properties.get("obsflow.retention-seconds", tdef.retention.total_seconds()))
    if opts and opts.retention:
        seconds = int(opts.retention.total_seconds())
    cutoff = now - timedelta(seconds=seconds)
    col = table.properties.get("obsflow.time-column", tdef.time_column)
    expired = LessThan(col, _iso(cutoff))
    if table.current_snapshot() is None:
        return table
    if opts and opts.archive:
        archive = _archive_table(catalog, spec, tdef)
        snap = archive.current_snapshot()
        through = snap.summary.additional_properties.get(ARCHIVED_THROUGH) if snap and snap.summary else None
        window = expired if through is None else And(GreaterThanOrEqual(col, through), expired)
        rows = table.scan(row_filter=window).to_arrow()
        if rows.num_rows or through is None or through < _iso(cutoff):
            # idempotent: rows below `through` were archived by an earlier run
            archive.append(rows.cast(tdef.arrow_schema()) if rows.num_rows else tdef.arrow_schema().empty_table(),
                           snapshot_properties={ARCHIVED_THROUGH: _iso(cutoff)})
            report.archived_rows += rows.num_rows

    def delete(t: Table) -> Table:
        before = int(t.current_snapshot().summary.additional_properties.get("total-records", 0)) if t.current_snapshot() else 0
        t.delete(delete_filter=expired, snapshot_properties=_carry(t))
        t = catalog.load_table(t.name())
        after = int(t.current_snapshot().summary.additional_properties.get("total-records", 0)) if t.current_snapshot() else 0
        report.expired_rows += before - after
        return t

    return _retrying(catalog, table, report, delete)


# -- compaction ----------------------------------------------------------------------

def _partition_filter(tdef: TableDef, part: dict):
    """The row filter selecting exactly one partition of ``tdef``."""
    preds = []
    for (col, transform), (name, value) in zip(tdef.partition, part.items()):
        if transform == "day":
            if hasattr(value, "toordinal"):  # inspect.files() gives dates
                start = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
            else:
                start = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=int(value))
            preds += [GreaterThanOrEqual(col, _iso(start)), LessThan(col, _iso(start + timedelta(days=1)))]
        else:
            preds.append(IsNull(col) if value is None else EqualTo(col, value))
    out = preds[0]
    for p in preds[1:]:
        out = And(out, p)
    return out


def compact(catalog: Catalog, spec: PipelineSpec, table: Table, tdef: TableDef, report: TableReport) -> Table:
    """Rewrite each partition holding at least ``min_files_to_compact`` small files into
    files of about ``target_file_mb``."""
    m = spec.storage.maintenance
    files = _data_files(table)
    report.files_before = files.num_rows
    if files.num_rows == 0:
        return table
    small = files.filter(pc.less(files.column("file_size_in_bytes"), m.small_file_mb * 1024 * 1024))
    groups: dict[tuple, int] = {}
    parts: dict[tuple, dict] = {}
    for p in small.column("partition").to_pylist():
        key = tuple(sorted(p.items(), key=lambda kv: kv[0]))
        groups[key] = groups.get(key, 0) + 1
        parts[key] = p
    names = [f.name for f in table.spec().fields]
    for key, n in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if n < m.min_files_to_compact:
            continue
        part = {name: parts[key][name] for name in names}
        flt = _partition_filter(tdef, part)

        def rewrite(t: Table) -> Table:
            rows = t.scan(row_filter=flt).to_arrow()
            with t.transaction() as tx:
                tx.set_properties({"write.target-file-size-bytes": str(m.target_file_mb * 1024 * 1024)})
                tx.overwrite(rows.cast(tdef.arrow_schema()), overwrite_filter=flt, snapshot_properties=_carry(t))
            return catalog.load_table(t.name())

        table = _retrying(catalog, table, report, rewrite)
        report.compacted_partitions += 1
    report.files_after = _data_files(table).num_rows
    return table


# -- snapshots and orphans -----------------------------------------------------------

def expire_snapshots(catalog: Catalog, table: Table, older_than: datetime, report: TableReport) -> Table:
    """Expire every snapshot older than ``older_than`` except the current one."""
    def expire(t: Table) -> Table:
        current = t.current_snapshot()
        ids = [s.snapshot_id for s in t.snapshots() if s.timestamp_ms < older_than.timestamp() * 1000 and (current is None or s.snapshot_id != current.snapshot_id)]
        if ids:
            t.maintenance.expire_snapshots().by_ids(ids).commit()
        report.expired_snapshots += len(ids)
        return catalog.load_table(t.name())

    return _retrying(catalog, table, report, expire)


def referenced_files(table: Table) -> set[str]:
    """Every file some snapshot or metadata file of ``table`` still points at."""
    io = table.io
    refs = {table.metadata_location}
    refs.update(e.metadata_file for e in table.metadata.metadata_log)
    for snap in table.snapshots():
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                refs.add(entry.data_file.file_path)
    for stats in table.metadata.statistics:
        refs.add(stats.statistics_path)
    return {_normalize(r) for r in refs}


def _normalize(uri: str) -> str:
    p = urlparse(uri)
    if p.scheme in ("", "file"):
        return p.path
    return f"{p.netloc}{p.path}"


def _filesystem(spec: PipelineSpec, location: str) -> tuple[pafs.FileSystem, str]:
    p = urlparse(location)
    if p.scheme in ("s3", "s3a"):
        props = catalog_properties(spec.storage)
        endpoint = props.get("s3.endpoint")
        fs = pafs.S3FileSystem(
            access_key=props.get("s3.access-key-id"), secret_key=props.get("s3.secret-access-key"),
            region=props.get("s3.region", "us-east-1"),
            endpoint_override=urlparse(endpoint).netloc if endpoint else None,
            scheme=urlparse(endpoint).scheme if endpoint else "https",
        )
        return fs, f"{p.netloc}{p.path}"
    return pafs.LocalFileSystem(), p.path


def remove_orphans(spec: PipelineSpec, table: Table, min_age: timedelta, report: TableReport, now: datetime) -> None:
    """Delete files under the table's location that nothing references and that are
    older than ``min_age``."""
    fs, root = _filesystem(spec, table.location())
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return
    refs = referenced_files(table)
    horizon = now - min_age
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        path = info.path if info.path.startswith("/") or not isinstance(fs, pafs.LocalFileSystem) else "/" + info.path
        if path in refs:
            continue
        mtime = info.mtime
        if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or timezone.utc) > horizon:
            continue
        fs.delete_file(info.path)
        report.orphan_files += 1
        report.orphan_bytes += info.size or 0


# -- all of it -----------------------------------------------------------------------

def maintain(spec: PipelineSpec, now: datetime | None = None, tables: list[str] | None = None,
             steps: tuple[str, ...] = ("retention", "compact", "expire", "orphans")) -> list[TableReport]:
    """Run the maintenance ``steps`` on every existing table of the spec's namespace
    (or on ``tables``), archives included. Returns one report per table."""
    now = now or datetime.now(timezone.utc)
    catalog = open_catalog(spec.storage)
    ns = spec.storage.namespace
    if ns not in {n[0] for n in catalog.list_namespaces()}:
        return []
    existing = sorted(i[-1] for i in catalog.list_tables(ns))
    names = [n for n in existing if tables is None or n in tables]
    reports = []
    m = spec.storage.maintenance
    for name in names:
        base = name[: -len("_archive")] if name.endswith("_archive") else name
        tdef = TABLES.get(base)
        if tdef is None:
            continue
        started = time.monotonic()
        report = TableReport(table=f"{ns}.{name}")
        table = catalog.load_table(f"{ns}.{name}")
        if "retention" in steps and not name.endswith("_archive"):
            table = apply_retention(catalog, spec, table, tdef, now, report)
        elif "retention" in steps:
            table = _retrying(catalog, table, report, lambda t: _archive_retention(catalog, t, tdef, now, report))
        if "compact" in steps:
            table = compact(catalog, spec, table, tdef, report)
        if "expire" in steps:
            table = expire_snapshots(catalog, table, now - m.snapshot_max_age, report)
        if "orphans" in steps:
            remove_orphans(spec, table, m.orphan_min_age, report, now)
        report.seconds = time.monotonic() - started
        reports.append(report)
    return reports


def _archive_retention(catalog: Catalog, t: Table, tdef: TableDef, now: datetime, report: TableReport) -> Table:
    if t.current_snapshot() is None:
        return t
    seconds = int(t.properties.get("obsflow.retention-seconds", 365 * 86400))
    expired = LessThan(tdef.time_column, _iso(now - timedelta(seconds=seconds)))
    keep = {ARCHIVED_THROUGH: t.current_snapshot().summary.additional_properties.get(ARCHIVED_THROUGH, "")}
    before = int(t.current_snapshot().summary.additional_properties.get("total-records", 0))
    t.delete(delete_filter=expired, snapshot_properties={k: v for k, v in keep.items() if v})
    t = catalog.load_table(t.name())
    report.expired_rows += before - int(t.current_snapshot().summary.additional_properties.get("total-records", 0))
    return t
