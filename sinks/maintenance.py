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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from typing import Any, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, IsNull, LessThan, NotIn, Or
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from pipelines.spec import PipelineSpec
from schemas.tables import TABLES, TableDef
from sinks.catalog import NO_RETRIES, catalog_properties, open_catalog
from sinks.iceberg import OFFSETS_KEY

log = logging.getLogger(__name__)

ARCHIVED_THROUGH = "obsflow.archived-through"
#: archive snapshot summary: sequence number of the hot-table snapshot the archived rows were read from
ARCHIVED_SEQ = "obsflow.archived-sequence-number"


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
    return dt.astimezone(UTC).isoformat()


def _carry(table: Table) -> dict[str, str]:
    """Snapshot properties that keep the pipeline's recorded positions on a maintenance commit."""
    snap = table.current_snapshot()
    if snap is None or snap.summary is None:
        return {}
    props = snap.summary.additional_properties
    return {k: props[k] for k in (OFFSETS_KEY, ARCHIVED_THROUGH, ARCHIVED_SEQ) if props.get(k)}


_T = TypeVar("_T")


def _retrying(catalog: Catalog, table: Table, report: TableReport, fn: Callable[[Table], _T], attempts: int = 10) -> _T:
    """Run ``fn(table)``; on a commit conflict reload the table and run it again, at most
    ``attempts`` runs in all: the last run's conflict is raised."""
    for attempt in range(attempts - 1):
        try:
            return fn(table)
        except CommitFailedException:
            report.retries += 1
            time.sleep(min(0.05 * 2**attempt, 2.0))
            table = catalog.load_table(table.name())
    return fn(table)


def _data_files(table: Table) -> pa.Table:
    if table.current_snapshot() is None:
        return pa.table({"file_path": pa.array([], pa.string())})
    return table.inspect.files()


# -- retention -----------------------------------------------------------------------


def archive_settings(spec: PipelineSpec, tdef: TableDef) -> tuple[timedelta, str | None] | None:
    """``(retention, location)`` of the table's archive, or None when expired rows are
    deleted outright: the spec's ``storage.tables.<name>.archive``, else the table
    contract's ``archive_retention`` (logs: one year); ``archive: false`` in the spec turns
    archiving off."""
    opts = spec.storage.tables.get(tdef.name)
    if opts and opts.archive is False:
        return None
    if opts and opts.archive:
        return opts.archive.retention, opts.archive.location
    if tdef.archive_retention is not None:
        return tdef.archive_retention, None
    return None


def _archive_table(catalog: Catalog, spec: PipelineSpec, tdef: TableDef) -> Table:
    """``<table>_archive``, created on first use; only for a table that is archived."""
    settings = archive_settings(spec, tdef)
    if settings is None:
        raise ValueError(f"storage.tables.{tdef.name}: the table is not archived")
    retention, location = settings
    ns = spec.storage.namespace
    name = f"{tdef.name}_archive"
    ident = f"{ns}.{name}"
    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        pass
    if location is None:
        wh = catalog_properties(spec.storage)["warehouse"].rstrip("/")
        location = f"{wh}/archive/{ns}/{name}"
    props = {
        "write.parquet.compression-codec": "zstd",
        "obsflow.retention-seconds": str(int(retention.total_seconds())),
        "obsflow.time-column": tdef.time_column,
        "obsflow.archive-of": tdef.name,
        NO_RETRIES[0]: NO_RETRIES[1],
    }
    try:
        return catalog.create_table(
            ident,
            schema=tdef.schema,
            partition_spec=tdef.partition_spec(),
            sort_order=tdef.sort_order(),
            location=location,
            properties=props,
        )
    except TableAlreadyExistsError:
        return catalog.load_table(ident)


def expired_filter(
    spec: PipelineSpec, table: Table, tdef: TableDef, now: datetime
) -> tuple[BooleanExpression, datetime]:
    """The rows of ``table`` past their retention at ``now``, and the flat cutoff.

    A retention in the spec (``storage.tables.<name>.retention``) applies to every row;
    otherwise the table's ``obsflow.retention-seconds`` (the contract's retention, or the
    spec's at creation) applies, except to rows whose ``retention_by`` column holds a
    value with its own retention (metrics: 1h rollups 400 days, 1m rollups 30 days)."""
    opts = spec.storage.tables.get(tdef.name)
    col = table.properties.get("obsflow.time-column", tdef.time_column)
    if opts and opts.retention:
        cutoff = now - opts.retention
        return LessThan(term=col, value=_iso(cutoff)), cutoff
    cutoff = now - timedelta(
        seconds=int(table.properties.get("obsflow.retention-seconds", tdef.retention.total_seconds()))
    )
    if tdef.retention_by is None:
        return LessThan(term=col, value=_iso(cutoff)), cutoff
    by, rules = tdef.retention_by
    expr: BooleanExpression = And(
        NotIn(term=by, literals=[v for v, _ in rules]), LessThan(term=col, value=_iso(cutoff))
    )
    for value, retention in rules:
        expr = Or(expr, And(EqualTo(term=by, value=value), LessThan(term=col, value=_iso(now - retention))))
    return expr, cutoff


def apply_retention(
    catalog: Catalog, spec: PipelineSpec, table: Table, tdef: TableDef, now: datetime, report: TableReport
) -> Table:
    """Delete the rows past their retention (:func:`expired_filter`); deletes aligned to
    day partitions drop whole files.

    When the table is archived (:func:`archive_settings`), the expired rows are first
    appended to ``<table>_archive``, and the delete removes only rows already there: it is
    committed against the very snapshot the archived rows were read from, so a pipeline
    commit in between (say a late row older than the cutoff) makes it fail, and the retry
    archives just what is new before deleting again. Nothing is archived twice: the archive
    records, with the cutoff, the sequence number of the hot snapshot it covers, and a
    later run reads, from data files up to that sequence number, only rows at or above
    that cutoff (:func:`_unarchived`)."""
    if table.current_snapshot() is None:
        return table
    expired, cutoff = expired_filter(spec, table, tdef, now)
    archived = archive_settings(spec, tdef) is not None
    if (
        archived
        and tdef.retention_by is not None
        and not (spec.storage.tables.get(tdef.name) and spec.storage.tables[tdef.name].retention)
    ):
        raise ValueError(
            f"storage.tables.{tdef.name}.archive: archiving needs one retention for the whole table "
            f"(set storage.tables.{tdef.name}.retention)"
        )

    def archive_then_delete(t: Table) -> Table:
        if archived:
            _archive_expired(catalog, spec, t, tdef, expired, cutoff, report)
        return _delete(catalog, t, expired, report)

    return _retrying(catalog, table, report, archive_then_delete)


def _total_records(snap: Snapshot) -> int:
    """The snapshot summary's ``total-records`` (0 when the snapshot has no summary)."""
    return int(snap.summary.additional_properties.get("total-records", 0)) if snap.summary else 0


def _delete(catalog: Catalog, t: Table, expired: BooleanExpression, report: TableReport) -> Table:
    """Delete ``expired`` in one commit based on ``t``'s current snapshot (pyiceberg
    asserts it is still the table's head, so a concurrent commit makes this fail)."""
    snap = t.current_snapshot()
    if snap is None:
        return t
    before = _total_records(snap)
    t.delete(delete_filter=expired, snapshot_properties=_carry(t))
    after_snap = t.current_snapshot()  # the transaction updated t to what it committed
    if after_snap is not None and after_snap.snapshot_id != snap.snapshot_id:
        report.expired_rows += before - _total_records(after_snap)
    return catalog.load_table(t.name())


def _archive_expired(
    catalog: Catalog,
    spec: PipelineSpec,
    t: Table,
    tdef: TableDef,
    expired: BooleanExpression,
    cutoff: datetime,
    report: TableReport,
) -> None:
    archive = _archive_table(catalog, spec, tdef)
    snap = t.current_snapshot()
    if snap is None:  # an empty table has nothing to archive
        return
    marker = archive.current_snapshot()
    props = marker.summary.additional_properties if marker is not None and marker.summary else {}
    through = props.get(ARCHIVED_THROUGH) or None
    # archives written before the sequence number was recorded: all current files count as covered
    seq = int(props[ARCHIVED_SEQ]) if props.get(ARCHIVED_SEQ) else ((snap.sequence_number or 0) if through else -1)
    col = t.properties.get("obsflow.time-column", tdef.time_column)
    rows = _unarchived(t, snap, expired, col, through, seq)
    if rows.num_rows == 0:
        return
    archive.append(
        rows.cast(tdef.arrow_schema()),
        snapshot_properties={ARCHIVED_THROUGH: _iso(cutoff), ARCHIVED_SEQ: str(snap.sequence_number or 0)},
    )
    report.archived_rows += rows.num_rows


def _unarchived(
    t: Table, snap: Snapshot, expired: BooleanExpression, col: str, through: str | None, seq: int
) -> pa.Table:
    """Rows of snapshot ``snap`` matching ``expired`` that no earlier archive commit took:
    from data files added after sequence number ``seq`` every expired row; from the files
    the last archive commit covered, only rows at or above its cutoff ``through``."""
    seqs: dict[str, int] = {}
    for manifest in snap.manifests(t.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(t.io, discard_deleted=True):
            seqs[entry.data_file.file_path] = entry.sequence_number if entry.sequence_number is not None else 0
    tasks = list(t.scan(row_filter=expired, snapshot_id=snap.snapshot_id).plan_files())
    old = [x for x in tasks if seqs.get(x.file.file_path, 0) <= seq]
    new = [x for x in tasks if seqs.get(x.file.file_path, 0) > seq]
    parts = []
    if new:
        parts.append(ArrowScan(t.metadata, t.io, t.schema(), expired).to_table(new))
    if old and through is not None:
        parts.append(
            ArrowScan(t.metadata, t.io, t.schema(), And(GreaterThanOrEqual(term=col, value=through), expired)).to_table(
                old
            )
        )
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return pa.table({f.name: pa.array([], f.type) for f in schema_to_pyarrow(t.schema())})
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


# -- compaction ----------------------------------------------------------------------


def _partition_filter(tdef: TableDef, part: dict[str, Any]) -> BooleanExpression:
    """The row filter selecting exactly one partition of ``tdef``."""
    preds: list[BooleanExpression] = []
    for (col, transform), (_name, value) in zip(tdef.partition, part.items()):
        if transform == "day":
            if hasattr(value, "toordinal"):  # inspect.files() gives dates
                start = datetime(value.year, value.month, value.day, tzinfo=UTC)
            else:
                start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(value))
            preds += [
                GreaterThanOrEqual(term=col, value=_iso(start)),
                LessThan(term=col, value=_iso(start + timedelta(days=1))),
            ]
        else:
            preds.append(IsNull(term=col) if value is None else EqualTo(term=col, value=value))
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
        ids = [
            s.snapshot_id
            for s in t.snapshots()
            if s.timestamp_ms < older_than.timestamp() * 1000
            and (current is None or s.snapshot_id != current.snapshot_id)
        ]
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
            access_key=props.get("s3.access-key-id"),
            secret_key=props.get("s3.secret-access-key"),
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
        if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or UTC) > horizon:
            continue
        fs.delete_file(info.path)
        report.orphan_files += 1
        report.orphan_bytes += info.size or 0


# -- all of it -----------------------------------------------------------------------


def maintain(
    spec: PipelineSpec,
    now: datetime | None = None,
    tables: list[str] | None = None,
    steps: tuple[str, ...] = ("retention", "compact", "expire", "orphans"),
) -> list[TableReport]:
    """Run the maintenance ``steps`` on every existing table of the spec's namespace
    (or on ``tables``), archives included: an archive the retention step creates is
    maintained in the same run. Returns one report per table."""
    now = now or datetime.now(UTC)
    catalog = open_catalog(spec.storage)
    ns = spec.storage.namespace
    if ns not in {n[0] for n in catalog.list_namespaces()}:
        return []
    existing = sorted(i[-1] for i in catalog.list_tables(ns))
    names = [n for n in existing if tables is None or n in tables]
    reports = []
    m = spec.storage.maintenance
    i = 0
    while i < len(names):
        name = names[i]
        i += 1
        is_archive = name.endswith("_archive")
        base = name[: -len("_archive")] if is_archive else name
        tdef = TABLES.get(base)
        if tdef is None:
            continue
        started = time.monotonic()
        report = TableReport(table=f"{ns}.{name}")
        table = catalog.load_table(f"{ns}.{name}")
        if "retention" in steps and not is_archive:
            table = apply_retention(catalog, spec, table, tdef, now, report)
            arch = f"{name}_archive"
            if arch not in names and (tables is None or arch in tables) and catalog.table_exists(f"{ns}.{arch}"):
                names.insert(i, arch)
        elif "retention" in steps:
            settings = archive_settings(spec, tdef)
            seconds = (
                int(settings[0].total_seconds())
                if settings
                else int(table.properties.get("obsflow.retention-seconds", 365 * 86400))
            )
            table = _retrying(
                catalog,
                table,
                report,
                lambda t: _archive_retention(catalog, t, tdef, now - timedelta(seconds=seconds), report),
            )
        if "compact" in steps:
            table = compact(catalog, spec, table, tdef, report)
        if "expire" in steps:
            table = expire_snapshots(catalog, table, now - m.snapshot_max_age, report)
        if "orphans" in steps:
            remove_orphans(spec, table, m.orphan_min_age, report, now)
        report.seconds = time.monotonic() - started
        reports.append(report)
    return reports


def _archive_retention(catalog: Catalog, t: Table, tdef: TableDef, cutoff: datetime, report: TableReport) -> Table:
    """Delete archived rows older than ``cutoff``, keeping the archive's markers."""
    if t.current_snapshot() is None:
        return t
    col = t.properties.get("obsflow.time-column", tdef.time_column)
    return _delete(catalog, t, LessThan(term=col, value=_iso(cutoff)), report)
