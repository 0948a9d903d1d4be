"""Where the ``event_id`` dedupe (:mod:`transforms.dedupe`) finds the ids a partition held
before a restart: the flow's own table.

The table holds, for every source partition, exactly the first copies the flow accepted
below the position the run resumes from (duplicates are never written; rows of a replayed
batch that the table already holds are filtered by offset at the sink). So the ids of
the rows below the first offset the flow is about to process are the ids it held when it
stopped, up to the bound; nothing else needs to be kept across a restart, on any engine."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.spec import PipelineSpec

log = logging.getLogger(__name__)

_NO_ROWS = pa.table({"event_id": pa.array([], pa.string()), "ms": pa.array([], pa.int64())})


class TableSeed:
    """``(topic, partition, before_offset, since_ms) -> table`` of ``event_id`` (no nulls)
    and ``ms`` (record time in milliseconds), in offset order, read from ``table`` (its rows with that ``source_topic`` /
    ``source_partition``, ``source_offset < before_offset`` and ``ingested_at >=
    since_ms``). No table (or no warehouse) yet: no ids. Pickles without its catalog."""

    def __init__(self, spec: PipelineSpec, table: str):
        self.spec = spec
        self.table = table
        self._catalog = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "table": self.table, "_catalog": None}

    def _load(self):
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        from sinks.catalog import NoWarehouseError, open_catalog

        try:
            if self._catalog is None:
                self._catalog = open_catalog(self.spec.storage, create=False)
            return self._catalog.load_table(f"{self.spec.storage.namespace}.{self.table}")
        except (NoWarehouseError, NoSuchTableError, NoSuchNamespaceError):
            return None

    def __call__(self, topic: str, partition: int, before_offset: int, since_ms: int) -> pa.Table:
        """The ids, read like a commit writes: a storage or catalog outage is retried for
        ``storage.commit.retry_seconds``, then raises :class:`sinks.iceberg.StorageUnavailable`
        naming the table and the cause (credentials redacted). The dedupe cannot be exact
        without these ids, so an outage stops the batch rather than letting a retry through."""
        from sinks.catalog import catalog_properties, redact
        from sinks.iceberg import _TRANSIENT, StorageUnavailable

        retry_s = self.spec.storage.commit.retry_seconds.total_seconds()
        deadline = time.monotonic() + retry_s
        outages = 0
        while True:
            try:
                return self._read(topic, partition, before_offset, since_ms)
            except _TRANSIENT as e:
                outages += 1
                self._catalog = None
                giving_up = time.monotonic() > deadline
                log.warning(
                    "dedupe: reading %s failed (%s)%s",
                    self.table,
                    type(e).__name__,
                    ", giving up" if giving_up else ", retrying",
                )
                if giving_up:
                    detail = redact(str(e), catalog_properties(self.spec.storage))[:200]
                    raise StorageUnavailable(
                        f"cannot read the event ids of {topic}:{partition} from "
                        f"{self.spec.storage.namespace}.{self.table} for the dedupe: storage or catalog "
                        f"unavailable for {retry_s:.0f}s ({type(e).__name__}: {detail})"
                    ) from None
                time.sleep(min(0.2 * 2 ** min(outages, 5), 5.0))

    def _read(self, topic: str, partition: int, before_offset: int, since_ms: int) -> pa.Table:
        from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

        table = self._load()
        if table is None or table.current_snapshot() is None:
            return _NO_ROWS
        rows = table.scan(
            row_filter=And(
                EqualTo(term="source_topic", value=topic),
                EqualTo(term="source_partition", value=partition),
                LessThan(term="source_offset", value=before_offset),
                GreaterThanOrEqual(
                    term="ingested_at", value=dt.datetime.fromtimestamp(max(since_ms, 0) / 1000, dt.UTC).isoformat()
                ),
            ),
            selected_fields=("event_id", "ingested_at", "source_offset"),
        ).to_arrow()
        rows = rows.filter(pc.is_valid(rows.column("event_id")))
        if not rows.num_rows:
            return _NO_ROWS
        rows = rows.sort_by([("source_offset", "ascending")])
        us = rows.column("ingested_at").cast(pa.int64()).to_numpy()  # microseconds since the epoch
        out = pa.table({"event_id": rows.column("event_id").cast(pa.string()), "ms": pa.array(us // 1000)})
        log.info("dedupe: %d event ids of %s:%d seeded from %s", out.num_rows, topic, partition, self.table)
        return out
