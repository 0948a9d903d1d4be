"""Iceberg sink: batched, partitioned appends that record the source positions they cover.

Effectively-once: every commit to a table writes, in its snapshot summary under
``obsflow.offsets``, the next offset per ``topic:partition`` that the table has fully
received (merged with what earlier commits recorded). On start a job reads these
positions back (:meth:`IcebergSink.resume_offsets`), resumes its sources from the
smallest position over the tables a topic feeds, and drops, per table, rows below that
table's own position — so a crash between two tables' commits neither loses nor
duplicates a row."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    _dataframe_to_data_files,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, Table, TableProperties, WriteTask
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_bool, property_as_int

from core.errors import ServiceUnavailable
from pipelines.spec import PipelineSpec
from core.stats import RunStats
from schemas.tables import table_def
from sinks.catalog import catalog_properties, load_tables, open_catalog, redact
from sinks.plan import WritePlan

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from pipelines.graph import FlowOutput

log = logging.getLogger(__name__)

OFFSETS_KEY = "obsflow.offsets"
#: the job's run counters so far when the commit was made (:func:`run_counters`: records in /
#: accepted / dead-lettered / dropped, per source, tail sampling by reason)
STATS_KEY = "obsflow.stats"
#: the environment variable naming the run a process belongs to: every process of one run
#: (a Bytewax cluster's processes) carries the same value, so that a reader sums their
#: counters (set by :func:`runners.bytewax.cluster.spawn`; set it yourself on each machine
#: of a cluster started with ``--process-id``). A Beam job does not read it on its workers:
#: its run id is fixed when the pipeline is built and given to each sink (``run_id=``)
RUN_ID_ENV = "OBSFLOW_RUN_ID"
#: per ``topic:partition``, the next offset after the last batch whose flow rows (rows the
#: flows write directly, in offset order) are in the table; may run ahead of the positions
#: (a table a stage also writes records a position only when every shard has reported it)
WRITTEN_KEY = "obsflow.flow_written"


class StorageUnavailable(ServiceUnavailable, RuntimeError):
    """Object storage or the catalog stayed unreachable for ``commit.retry_seconds``."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError

        errors += [OperationalError, DBAPIError]
    except ImportError:
        pass
    return tuple(errors)


_TRANSIENT = _transient_errors()


def snapshot_offsets(table: Table, key: str = OFFSETS_KEY) -> dict[str, int]:
    """``{"topic:partition": next_offset}`` recorded by the newest snapshot that carries
    positions (walking back over snapshots of other writers, e.g. maintenance, that do not);
    ``key``: :data:`WRITTEN_KEY` for the flow rows written through."""
    snap = table.current_snapshot()
    while snap is not None:
        raw = snap.summary.additional_properties.get(key) if snap.summary else None
        if raw:
            return json.loads(raw)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    return {}


def run_counters(stats: RunStats, run_id: str | None = None) -> dict:
    """The run's counters so far (``stats``: the sink's, the process's ``STATS`` in a job), as the run
    summary prints them: records (and OTLP items) in / accepted / dead-lettered / dropped,
    the same per source, dead letters by reason, dropped records by reason (``duplicate``:
    the event dedupe), and tail sampling as ``{"<counter>:<reason>":
    n}``; ``run_started`` (epoch seconds) tells one run's figures from another's. Cumulative
    since the run started; every commit carries them in its summary under :data:`STATS_KEY`.

    The counters are this process's own: ``process`` (``host:pid``) names it and ``run_id``
    the run it belongs to, so that a reader adds up the latest counters of each process of a
    run (:func:`ui.app.pipeline_counters`): the ``run_id`` given (a Beam job's, fixed when its
    pipeline was built), else ``$OBSFLOW_RUN_ID``, absent when neither is set."""
    import os
    import socket

    snap = stats.snapshot()  # a consistent copy, taken under the stats' lock
    by_source: dict[str, dict[str, int]] = {}
    for (src, what), n in sorted(snap["by_source"].items()):
        by_source.setdefault(src, {})[what] = n
    run_id = run_id or os.environ.get(RUN_ID_ENV)
    return {
        "run_started": round(snap["started"], 3),
        "process": f"{socket.gethostname()}:{os.getpid()}",
        **({"run_id": run_id} if run_id else {}),
        **{
            k: snap[k]
            for k in (
                "records_in",
                "records_accepted",
                "records_dead",
                "records_dropped",
                "items_in",
                "items_accepted",
                "items_dead",
                "items_dropped",
            )
        },
        "by_source": by_source,
        "dead_by_reason": dict(sorted(snap["dead_by_reason"].items())),
        "dropped_by_reason": _by_reason(snap.get("dropped_by_source_reason", {})),
        "tail_sampling": {f"{k}:{r}": n for (k, r), n in sorted(snap["tail_sampling"].items()) if n},
    }


def _by_reason(by_source_reason: dict) -> dict[str, int]:
    """``{(source, reason): n}`` summed per reason, sorted."""
    out: dict[str, int] = {}
    for (_, reason), n in by_source_reason.items():
        out[reason] = out.get(reason, 0) + n
    return dict(sorted(out.items()))


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


@dataclass
class _Pending:
    parts: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)  # flow rows written through (WRITTEN_KEY)
    last_commit: float = field(default_factory=time.monotonic)


@dataclass
class CommitStats:
    commits: int = 0
    rows: int = 0
    seconds: float = 0.0
    retries: int = 0
    files_written: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)


def _partition_tasks(meta, data: pa.Table, write_uuid: uuid.UUID, counter, downcast_ns: bool) -> list[WriteTask] | None:
    """pyiceberg write tasks for ``data``: one zero-copy slice per partition of the table's
    spec (rows ordered by partition with one stable sort and one ``take``), each bin-packed
    to the target file size and carrying its partition key, exactly as pyiceberg's
    ``_dataframe_to_data_files`` builds them. That function instead filters the whole table
    once per partition, then transforms, groups and filters each partition again; here the
    partition keys are dictionary-encoded into one integer code per row, so the split is
    one pass to encode, an integer sort and one copy of the rows. ``None`` when a partition
    source is a nested column or the codes would not fit 62 bits (the caller lets pyiceberg
    split those). ``downcast_ns``: pyiceberg's ``downcast-ns-timestamp-to-us-on-write``."""
    spec, schema = meta.spec(), meta.schema()
    target = cast(
        int,
        property_as_int(
            meta.properties,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        ),
    )  # a default: never None
    task_schema = pyarrow_to_schema(
        data.schema,
        name_mapping=schema.name_mapping,
        format_version=meta.format_version,
        downcast_ns_timestamp_to_us=downcast_ns,
    )

    def tasks(part: pa.Table, key: PartitionKey | None) -> list[WriteTask]:
        return [
            WriteTask(
                write_uuid=write_uuid,
                task_id=next(counter),
                record_batches=batches,
                partition_key=key,
                schema=task_schema,
            )
            for batches in bin_pack_arrow_table(part, target)
        ]

    if data.num_rows == 0:
        return []
    if spec.is_unpartitioned():
        return tasks(data, None)
    n = data.num_rows
    code = np.zeros(n, dtype=np.int64)
    keys = []  # (partition field, its distinct values), in spec order
    for pf in spec.fields:
        name = schema.find_column_name(pf.source_id)
        if name is None or "." in name:
            return None
        column = pf.transform.pyarrow_transform(schema.find_field(pf.source_id).field_type)(data.column(name))
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = pc.dictionary_encode(column, null_encoding="encode")  # a null key is a value of its own
        if len(encoded.dictionary) and int(code.max(initial=0) + 1) * len(encoded.dictionary) >= 2**62:
            return None  # codes would overflow (no table here comes close): let pyiceberg split
        code = code * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False)
        keys.append((pf, encoded.dictionary))
    if code.max(initial=0) < 1 << 16:
        code = code.astype(np.uint16)  # numpy's stable sort is a radix sort for 16 bits: O(n)
    order = np.argsort(code, kind="stable")
    ordered_code = code[order]
    bounds = [0, *(np.flatnonzero(ordered_code[1:] != ordered_code[:-1]) + 1).tolist(), n]
    ordered = data if len(bounds) == 2 else data.take(pa.array(order))
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        c, values = int(ordered_code[lo]), []
        for pf, distinct in reversed(keys):
            values.append(PartitionFieldValue(field=pf, value=distinct[c % len(distinct)].as_py()))
            c //= len(distinct)
        key = PartitionKey(field_values=values[::-1], partition_spec=spec, schema=schema)
        out.extend(tasks(ordered.slice(lo, hi - lo), key))
    return out


@dataclass
class _WrittenFiles:
    """Parquet data files written for one commit, and the table layout they were written
    for. The two halves of pyiceberg's ``Transaction.append``, kept apart so that a retried
    commit reuses the files (pyiceberg's docstring advises this two-stage pattern for
    retries; it writes and checks exactly as ``append`` does)."""

    data_files: list
    schema_id: int
    spec_id: int

    @classmethod
    def write(cls, table: Table, data: pa.Table) -> _WrittenFiles:
        meta = table.metadata
        downcast_ns = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False
        _check_pyarrow_schema_compatible(
            meta.schema(),
            provided_schema=data.schema,
            format_version=meta.format_version,
            downcast_ns_timestamp_to_us=downcast_ns,
        )
        write_uuid, counter = uuid.uuid4(), itertools.count(0)
        tasks = _partition_tasks(meta, data, write_uuid, counter, downcast_ns)
        if tasks is None:
            written = _dataframe_to_data_files(
                table_metadata=meta, write_uuid=write_uuid, counter=counter, df=data, io=table.io
            )
        else:  # pyiceberg encodes the tasks' files side by side on its own pool
            written = write_file(table.io, meta, iter(tasks))
        return cls(list(written), meta.current_schema_id, meta.default_spec_id)

    def valid_for(self, table: Table) -> bool:
        """Whether the files still fit the table (same schema and partition spec)."""
        return (table.metadata.current_schema_id, table.metadata.default_spec_id) == (self.schema_id, self.spec_id)

    def commit(self, table: Table, properties: dict[str, str]) -> None:
        """One snapshot adding the files, with ``properties`` in its summary (a snapshot
        also when there are no files: it records positions). Raises pyiceberg's
        ``CommitFailedException`` when another writer committed first."""
        merge = property_as_bool(
            table.metadata.properties,
            TableProperties.MANIFEST_MERGE_ENABLED,
            TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
        )
        with table.transaction() as txn:
            update = txn.update_snapshot(snapshot_properties=properties)
            with update.merge_append() if merge else update.fast_append() as append:
                for f in self.data_files:
                    append.append_data_file(f)


class OpenTables:
    """A catalog and some of its tables (``names``), opened once, on first use (tables
    created if missing), and shared by what one run does with them in turn: reading the
    positions its tables record (:meth:`committed`), then writing them
    (``IcebergSink(..., opened=...)``), so the run opens the catalog and loads each table
    once. Only for a sink that starts right after the positions were read in the same
    process (its ``committed`` is then what the run resumed from)."""

    def __init__(self, spec: PipelineSpec, names: list[str]):
        self.spec = spec
        self.names = list(names)
        self._catalog: Catalog | None = None
        self._tables: dict[str, Table] | None = None

    @classmethod
    def open(cls, spec: PipelineSpec, names: list[str]) -> OpenTables:
        """The catalog of ``spec`` and its tables ``names``, opened when first used."""
        return cls(spec, names)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.spec.storage)
        return self._catalog

    @property
    def tables(self) -> dict[str, Table]:
        if self._tables is None:
            self._tables = load_tables(self.catalog, self.spec.storage, self.names)
        return self._tables

    def has(self, names: list[str]) -> bool:
        """Whether every table of ``names`` is one of these (nothing is opened to tell)."""
        return all(n in self.names for n in names)

    def committed(self) -> dict[str, dict[str, int]]:
        """``{table: {"topic:partition": next_offset}}`` each table's latest snapshot records."""
        return {n: snapshot_offsets(t) for n, t in self.tables.items()}


def resume_from(committed: dict[str, dict[str, int]], tables_for_topic: dict[str, list[str]]) -> dict[str, int]:
    """Where each ``topic:partition`` resumes, from the positions each table recorded
    (``committed``): the smallest over the tables the topic feeds. Partitions no table has
    recorded are absent (start from the beginning)."""
    out: dict[str, int] = {}
    for topic, names in tables_for_topic.items():
        keys: set[str] = set()
        for n in names:
            keys.update(k for k in committed.get(n, {}) if k.rsplit(":", 1)[0] == topic)
        for k in keys:
            out[k] = min(committed.get(n, {}).get(k, 0) for n in names)
    return out


class IcebergSink:
    """Buffer :class:`FlowOutput` rows per table and commit them in bounded batches.

    A table is committed when its buffer reaches ``storage.commit.max_rows`` rows or its
    oldest buffered row is ``max_seconds`` old (checked on each :meth:`write` and
    :meth:`tick`), and on :meth:`flush` / :meth:`close`. Commit conflicts (another writer
    committed first) are retried against the refreshed table with merged positions.

    With ``background`` (the default) a commit runs on one committer thread while the
    caller goes on transforming the next batches: Parquet encoding and the upload release
    the GIL, so on a machine with a spare core the write costs the pipeline little. Commits
    stay ordered: a table's next commit waits for its previous one, so at most one commit
    per table is in flight and the positions a snapshot records never move backwards. A
    commit that failed raises in the caller at the next :meth:`write`, :meth:`tick` or
    :meth:`flush`. :meth:`flush` and :meth:`close` return once every commit has landed.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        table_names: list[str],
        max_retries: int = 8,
        background: bool = True,
        dedupe: bool = False,
        *,
        plan: WritePlan,
        counters: RunStats,
        run_id: str | None = None,
        opened: OpenTables | None = None,
    ):
        # ``counters``: the run counters this sink records its commits and retries into, and
        # writes into each commit's summary (the runners give the process's ``STATS``);
        # ``run_id``: the run those counters belong to (:func:`run_counters`; a Beam job gives
        # its own, fixed at build time, as its workers lack ``$OBSFLOW_RUN_ID``)
        self.counters = counters
        self.run_id = run_id
        # who feeds each table from each topic (the job's plan, :func:`pipelines.graph.write_plan`):
        # stateful stages (each shard reports its positions) and stateless flow writes (their
        # batch's next offset)
        self._stage_defs = plan.stages
        self._topics_of = plan.topics_of
        self._stateless = plan.stateless  # (table, topic) written by flows directly
        self._reports: dict[str, dict[tuple[str, int], dict[str, int]]] = {}  # table -> (stage, shard) -> positions
        self._flow_pos: dict[str, dict[str, int]] = {}  # table -> tp -> next offset written
        self.spec = spec
        # ``opened``: the catalog and tables the run read its positions from, if they hold them all
        if opened is not None and opened.has(table_names):
            self.catalog = opened.catalog
            self.tables = {n: opened.tables[n] for n in table_names}
        else:
            self.catalog = open_catalog(spec.storage)
            self.tables = load_tables(self.catalog, spec.storage, table_names)
        self.committed: dict[str, dict[str, int]] = {n: snapshot_offsets(t) for n, t in self.tables.items()}
        self.written: dict[str, dict[str, int]] = {n: snapshot_offsets(t, WRITTEN_KEY) for n, t in self.tables.items()}
        self.pending: dict[str, _Pending] = {n: _Pending() for n in self.tables}
        self.max_rows = spec.storage.commit.max_rows
        self.max_seconds = spec.storage.commit.max_seconds.total_seconds()
        self.max_retries = max_retries
        self.retry_seconds = spec.storage.commit.retry_seconds.total_seconds()
        self.stats = CommitStats()
        self._first_pending_at: dict[str, float] = {}
        # dead letters to Kafka too, when the spec asks (outputs.dead_letters_topic): produced
        # as rows are buffered, delivered before the positions covering them are committed
        self.dead_table = spec.dead_letters.table
        self._kafka_out = None
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iceberg-commit") if background else None
        self._inflight: dict[str, Future] = {}
        self._failed_tables: set[str] = set()  # tables whose commit failed for good: not committed again
        # a catch-up (runners.job.CatchUp) re-derives rows a table may partly hold already
        # (committed past its recorded positions): each row is written only if the table
        # does not hold it yet (as a multiset; the table read once), compared by identity
        # (:data:`DEDUPE_KEYS`): content for most tables, ids for rows a stage derives with its clock
        self._existing: dict[str, Counter] = (
            {n: _row_counts(t.scan().to_arrow(), n) for n, t in self.tables.items()} if dedupe else {}
        )

    def resume_offsets(self, tables_for_topic: dict[str, list[str]]) -> dict[str, int]:
        """Where each ``topic:partition`` resumes: the smallest position over its tables
        (:func:`resume_from`). Partitions no table has recorded are absent."""
        return resume_from(self.committed, tables_for_topic)

    def write(self, out: FlowOutput) -> None:
        """Buffer one batch's rows; commit tables whose bounds are reached."""
        key = tp_key(out.topic, out.partition)
        for name, rows in out.rows.items():
            if name not in self.pending:
                continue  # not a table of this sink (a catch-up writes one table: runners.job.CatchUp)
            # flow rows below the table's position, or below what its flow rows were written through
            done = max(self.committed[name].get(key, 0), self.written[name].get(key, 0))
            if out.next_offset <= self.committed[name].get(key, 0):
                continue  # the whole batch is already in this table, and its position recorded
            if out.next_offset <= done:
                rows = rows.slice(0, 0)  # its rows are in the table: only its position is news
            elif rows.num_rows and out.first_offset < done:
                rows = rows.filter(pc.greater_equal(rows.column("source_offset"), done))
            rows = self._new_rows(name, rows)
            p = self.pending[name]
            if rows.num_rows:
                p.parts.append(rows)
                p.rows += rows.num_rows
                self._first_pending_at.setdefault(name, time.monotonic())
                if name == self.dead_table and self.spec.outputs.dead_letters_topic:
                    self.kafka_out.publish_dead_letters(rows)
            self._flow_pos.setdefault(name, {})[key] = max(self._flow_pos.get(name, {}).get(key, 0), out.next_offset)
            p.written[key] = max(p.written.get(key, 0), out.next_offset)
            self._position(name, key)
        self.tick()

    def _position(self, name: str, tp: str) -> None:
        """A table's position for ``tp``: the smallest over everything that feeds the table
        from that topic (flow writes, every shard of every stage); nothing until all have
        reported it."""
        topic = tp.rsplit(":", 1)[0]
        vals = []
        if (name, topic) in self._stateless:
            vals.append(self._flow_pos.get(name, {}).get(tp))
        reports = self._reports.get(name, {})
        for d in self._stage_defs.values():
            if name in d.tables and topic in d.topics:
                vals += [reports.get((d.name, k), {}).get(tp) for k in range(d.shards)]
        if not vals or any(v is None for v in vals):
            return
        p = self.pending[name]
        p.positions[tp] = max(p.positions.get(tp, 0), min(cast("list[int]", vals)))

    def _new_rows(self, name: str, rows: pa.Table) -> pa.Table:
        """``rows`` without those the table already holds (only with ``dedupe``)."""
        have = self._existing.get(name)
        if not have or not rows.num_rows:
            return rows
        keep = []
        for k in _row_keys(rows, name):
            if have.get(k, 0) > 0:
                have[k] -= 1
                keep.append(False)
            else:
                keep.append(True)
        return rows if all(keep) else rows.filter(pa.array(keep))

    @property
    def kafka_out(self):
        """The producer for ``outputs.dead_letters_topic`` (made on first use)."""
        if self._kafka_out is None:
            from sinks.kafka import KafkaProducerSink

            self._kafka_out = KafkaProducerSink.for_spec(self.spec, self.counters)
        return self._kafka_out

    def accept(self, item) -> None:
        """Take whatever an engine hands the sink: a tick (:meth:`tick`), a stage output
        (:meth:`write_stage`) or a flow output (:meth:`write`)."""
        if is_tick(item):
            self.tick()
        elif is_stage_output(item):
            self.write_stage(item)
        else:
            self.write(item)

    def write_stage(self, out) -> None:
        """Buffer a stateful stage's output (:class:`pipelines.stages.StageOutput`).

        Positions: each shard reports what it has fully emitted; a table records, per
        partition, the smallest report over all ``out.shards`` shards, and nothing for a
        partition until every shard has reported it. Rows below a table's recorded
        position (re-emitted after a restart) are dropped when they carry offsets."""
        for name, rows in out.rows.items():
            if name not in self.pending:
                continue
            done = self.committed[name]
            if rows.num_rows and done and "source_offset" in rows.column_names:
                keys = pc.binary_join_element_wise(
                    rows.column("source_topic"), pc.cast(rows.column("source_partition"), pa.string()), ":"
                )
                floor = pa.array([done.get(k, 0) for k in keys.to_pylist()], pa.int64())
                rows = rows.filter(pc.greater_equal(rows.column("source_offset"), floor))
            rows = self._new_rows(name, rows)
            if rows.num_rows:
                p = self.pending[name]
                p.parts.append(rows)
                p.rows += rows.num_rows
                self._first_pending_at.setdefault(name, time.monotonic())
        d = self._stage_defs.get(out.stage)
        for name in d.tables if d is not None else ():
            if name not in self.pending:
                continue
            self._reports.setdefault(name, {})[(out.stage, out.shard)] = dict(out.positions)
            topics = self._topics_of.get(name, frozenset())
            for tp in out.positions:
                if tp.rsplit(":", 1)[0] in topics:
                    self._position(name, tp)
        self.tick()

    def tick(self) -> None:
        """Commit tables whose row or age bound is reached."""
        self._raise_failed()
        now = time.monotonic()
        for name, p in self.pending.items():
            if p.rows >= self.max_rows or (p.rows and now - self._first_pending_at.get(name, now) >= self.max_seconds):
                self._commit(name)

    def flush(self, include_empty: bool = True) -> None:
        """Commit everything buffered. With ``include_empty``, tables that received no
        rows but whose positions advanced commit an empty snapshot recording them. A table
        whose commit failed for good is not committed again, but the others still are
        (each records its own positions: a rerun catches the failed one up alone,
        ``runners.job.CatchUp``); then the first failure is raised."""
        errors = self._drain_errors()
        for name, p in self.pending.items():
            if name in self._failed_tables:
                continue
            if p.rows or (include_empty and any(self.committed[name].get(k, 0) < v for k, v in p.positions.items())):
                try:
                    self._commit(name)  # without a committer thread, the commit runs (and may fail) here
                except BaseException as e:  # noqa: BLE001 - raised below, after the others landed
                    self._failed_tables.add(name)
                    errors.append(e)
        errors += self._drain_errors()
        if errors:
            self.failed = errors[0]
            raise errors[0]

    def drain(self) -> None:
        """Wait for every commit in flight; raise the first that failed."""
        errors = self._drain_errors()
        if errors:
            self.failed = errors[0]
            raise errors[0]

    def _drain_errors(self) -> list[BaseException]:
        """Wait for every commit in flight; the failures (their tables marked failed)."""
        inflight, self._inflight = self._inflight, {}
        errors = []
        for name, fut in inflight.items():
            try:
                fut.result()
            except BaseException as e:  # noqa: BLE001 - raised by the caller, after the others landed
                self._failed_tables.add(name)
                errors.append(e)
        return errors

    def close(self) -> None:
        """Commit what is buffered and stop. A table whose commit failed for good is not
        committed again; the other tables' buffers are (see :meth:`flush`). When a failure
        was raised already, the run stops with that one (later failures are logged)."""
        failed_before = getattr(self, "failed", None)
        try:
            self.flush(include_empty=True)
        except BaseException as e:  # noqa: BLE001
            if failed_before is None:
                raise
            log.error("another commit failed while the run was stopping on %r: %r", failed_before, e)
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=True)
            if self._kafka_out is not None:
                self._kafka_out.close()

    def _raise_failed(self) -> None:
        for name, fut in list(self._inflight.items()):
            err = fut.exception() if fut.done() else None
            if err is not None:
                del self._inflight[name]
                self._failed_tables.add(name)
                self.failed = err
                raise err

    def _commit(self, name: str) -> None:
        """Hand the table's buffer to the committer (or commit it here without one),
        after the table's previous commit has landed."""
        prev = self._inflight.pop(name, None)
        if prev is not None:
            prev.result()
        p = self.pending[name]
        self.pending[name] = _Pending()
        self._first_pending_at.pop(name, None)
        if self._committer is None:
            self._commit_now(name, p)
        else:
            self._inflight[name] = self._committer.submit(self._commit_now, name, p)

    def _commit_now(self, name: str, p: _Pending) -> None:
        """Append ``p``'s rows with its positions, retrying commit conflicts and, for up to
        ``commit.retry_seconds``, storage or catalog outages. The Parquet files are written
        once: a retry commits the same files again (a conflict costs one metadata commit,
        not a re-encode, and leaves no orphan files), unless the outage struck while they
        were being written or the table's schema or partition spec changed meanwhile.
        After an outage the table is re-read first: if the positions are already recorded,
        the earlier attempt did land and is not repeated (no duplicates)."""
        if self._kafka_out is not None and name == self.dead_table:
            self._kafka_out.flush()  # delivered before the positions covering them are recorded
        table = self.tables[name]
        data = pa.concat_tables(p.parts) if p.parts else table_def(name).arrow_schema().empty_table()
        started = time.monotonic()
        deadline = started + self.retry_seconds
        conflicts = outages = 0
        files: _WrittenFiles | None = None
        while True:
            merged = dict(snapshot_offsets(table))
            written = dict(snapshot_offsets(table, WRITTEN_KEY))
            if (
                outages
                and (p.positions or p.written)
                and all(merged.get(k, 0) >= v for k, v in p.positions.items())
                and all(written.get(k, 0) >= v for k, v in p.written.items())
            ):
                break  # the attempt that failed on the way back had landed
            for k, v in p.positions.items():
                merged[k] = max(merged.get(k, 0), v)
            for k, v in p.written.items():
                written[k] = max(written.get(k, 0), v)
            props = {
                OFFSETS_KEY: json.dumps(merged, sort_keys=True),
                STATS_KEY: json.dumps(run_counters(self.counters, self.run_id), sort_keys=True, separators=(",", ":")),
            }
            if written:
                props[WRITTEN_KEY] = json.dumps(written, sort_keys=True)
            try:
                if files is None or not files.valid_for(table):
                    files = _WrittenFiles.write(table, data)
                    self.stats.files_written += len(files.data_files)
                files.commit(table, props)
                break
            except CommitFailedException:
                conflicts += 1
                if conflicts > self.max_retries:
                    raise
                self.stats.retries += 1
                self.counters.record_commit_retry(name, "conflict")
                time.sleep(min(0.05 * 2**conflicts, 2.0))
            except _TRANSIENT as e:
                outages += 1
                self.stats.retries += 1
                self.counters.record_commit_retry(name, "outage")
                if time.monotonic() > deadline:
                    detail = redact(str(e), catalog_properties(self.spec.storage))[
                        :200
                    ]  # redact first: a cut secret would slip through
                    raise StorageUnavailable(
                        f"cannot commit {data.num_rows} rows to {'.'.join(table.name())}: storage or catalog "
                        f"unavailable for {self.retry_seconds:.0f}s ({type(e).__name__}: {detail})"
                    ) from None
                log.warning("commit to %s failed (%s), retrying", name, type(e).__name__)
                time.sleep(min(0.2 * 2 ** min(outages, 5), 5.0))
            table = self._reload(name, table)
        self.committed[name] = merged
        self.written[name] = written
        self.stats.commits += 1
        self.stats.rows += data.num_rows
        self.stats.seconds += time.monotonic() - started
        self.stats.rows_by_table[name] = self.stats.rows_by_table.get(name, 0) + data.num_rows
        self.counters.record_commit(name, data.num_rows, time.monotonic() - started)
        log.debug("committed %d rows to %s", data.num_rows, name)

    def _reload(self, name: str, table: Table) -> Table:
        try:
            table = self.tables[name] = self.catalog.load_table(table.name())
        except _TRANSIENT:
            pass  # still down: the next attempt fails fast and waits again
        return table


#: What identifies a row of a table independently of when a stage derived it, for a
#: catch-up's dedupe (:meth:`IcebergSink._new_rows`): a trace by its id (its row's
#: ``decided_at`` is the stage's clock, and a trace re-decided from part of its spans has
#: other counts), a span by its ids and source coordinates (its ``sampling_policy`` and
#: ``adjusted_count`` follow its trace's decision). Other tables: the whole row, less
#: :data:`DECIDED_COLUMNS`.
DEDUPE_KEYS: dict[str, tuple[str, ...]] = {
    "traces": ("trace_id",),
    "spans": ("trace_id", "span_id", "source_topic", "source_partition", "source_offset"),
}
#: Columns a stage sets from its decision rather than from the record: a log line's
#: ``sample_rate`` follows its trace's adjusted count (log sampling by trace), so a line
#: re-derived by a stage restarted empty may carry another one; the line itself (content
#: and source coordinates) is the same.
DECIDED_COLUMNS: dict[str, tuple[str, ...]] = {"logs": ("sample_rate",)}


def _row_keys(t: pa.Table, table: str | None = None) -> list[tuple]:
    """Each row's identity in ``table`` as a hashable tuple: the :data:`DEDUPE_KEYS`
    columns, else its content less :data:`DECIDED_COLUMNS` (maps in their stored order)."""
    cols = list(DEDUPE_KEYS.get(table or "", ())) or sorted(
        c for c in t.column_names if c not in DECIDED_COLUMNS.get(table or "", ())
    )
    return [tuple(repr(r[c]) for c in cols) for r in t.select(cols).to_pylist()]


def _row_counts(t: pa.Table, table: str | None = None) -> Counter:
    return Counter(_row_keys(t, table))


def is_tick(item) -> bool:
    """An idle source's tick (it carries no rows; sinks commit by age on it)."""
    return type(item).__name__ == "Tick"


def is_stage_output(item) -> bool:
    return type(item).__name__ == "StageOutput"


def split_by_table(tables: list[str]):
    """``item → [(table, piece)]``, for engines that give each table one writer:

    * a flow output (:class:`pipelines.graph.FlowOutput`) goes, restricted to each
      table's rows, to the tables among ``tables`` that it has rows (possibly none) for;
    * a stage output (:class:`pipelines.stages.StageOutput`) goes to every table
      (restricted to that table's rows, possibly none), so each stage table hears every
      shard's positions;
    * a tick goes to every table.

    A stage table may record a position only when one sink has seen every shard's
    report (:meth:`IcebergSink.write_stage`), hence one writer per table."""

    def split(item):
        if is_tick(item):
            return [(t, item) for t in tables]
        rows = getattr(item, "rows", None) or {}
        if is_stage_output(item):
            return [(t, dataclasses.replace(item, rows={k: v for k, v in rows.items() if k == t})) for t in tables]
        return [(t, dataclasses.replace(item, rows={t: rows[t]})) for t in tables if t in rows]

    return split


def restrict_to(tables: set[str] | list[str]):
    """``item → [piece]`` for a writer of ``tables`` that only flows write (any number of
    such writers is sound: a flow output's positions are its own partition's): a flow
    output restricted to those tables' rows (dropped when it has none), ticks passed on,
    stage outputs dropped."""
    wanted = set(tables)

    def restrict(item):
        if is_tick(item):
            return [item]
        if is_stage_output(item):
            return []
        rows = {t: r for t, r in item.rows.items() if t in wanted}
        return [dataclasses.replace(item, rows=rows)] if rows else []

    return restrict


def table_writers(plan: WritePlan, names: list[str]) -> tuple[list[str], list[str]]:
    """``(anywhere, single)``: the tables among ``names`` that only flows write (any number
    of writers, each committing the rows it produced: see :func:`restrict_to`) and those
    a stateful stage writes (one writer each, which must hear every shard's position
    reports: see :func:`split_by_table`), both sorted."""
    staged = plan.staged_tables()
    return sorted(set(names) - staged), sorted(staged & set(names))
