"""The ``metrics`` stage: metric rollups for one shard (metric name hash).

Guarantees: a window's row is emitted once, when the stage watermark (the smallest over
its partitions) passed the window's end + ``allowed_lateness``; a sample later than that is
a ``late_data`` dead letter (a derived one is counted in ``dropped["late_derived"]``: its
log line or event is in its own table); an invalid sample is counted, never raised."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.clock import _Tracked
from pipelines.stages.contract import _MAX, _MIN, _NEVER, METRICS, StageDef, StageInput, StageOutput, StageTick, _concat
from transforms.rollup import MetricRollup

if TYPE_CHECKING:
    from pipelines.spec import RollupStep


class _StageRollup(MetricRollup):
    """A :class:`MetricRollup` whose windows close at the stage's watermark (``close_wm``)
    while each batch is judged late or too late against its own partition's watermark
    (set on ``watermark`` before each batch)."""

    close_wm: int | None = None

    def _close(self, wm, everything: bool = False):
        return super()._close(self.close_wm, everything)


def _late_dead_letters(late: pa.Table, source: str, lateness_ms: int) -> pa.Table:
    """Dead-letter rows (reason ``late_data``) for metric samples whose window had closed."""
    import json as _json

    from schemas.tables import DEAD_LETTERS

    rows = []
    for r in late.to_pylist():
        ts = r.get("timestamp")
        doc = {
            k: r.get(k) for k in ("name", "kind", "labels", "value", "bucket_bounds", "bucket_counts", "count", "sum")
        }
        doc["labels"] = dict(doc["labels"] or [])
        doc["timestamp"] = ts.isoformat() if ts is not None else None
        if r.get("temporality") is not None:  # wire schema version 2: how a cumulative sample is meant
            doc["temporality"] = r["temporality"]
        if r.get("start_time") is not None:
            doc["start_time"] = r["start_time"].isoformat()
        raw = _json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        rows.append(
            {
                "received_at": r.get("ingested_at"),
                "reason": "late_data",
                "detail": f"timestamp {doc['timestamp']}: its window closed (later than allowed_lateness "
                f"{lateness_ms // 1000}s behind the partition's watermark); raw is the decoded sample re-encoded",
                "source": source or r.get("source_topic"),
                "source_topic": r.get("source_topic"),
                "source_partition": r.get("source_partition"),
                "source_offset": r.get("source_offset"),
                "raw": raw,
                "raw_size": len(raw),
                "raw_truncated": False,
            }
        )
    from sinks.dead_letters import require_reasons

    return require_reasons(pa.Table.from_pylist(rows, schema=DEAD_LETTERS.arrow_schema()))


class MetricsStage(_Tracked):
    """Metric rollups for one shard (metric name hash): samples of ``signal: metric``
    flows (kind ``samples``) and samples derived from log / event rows (kind ``derived``).
    Emits closed-window ``metrics`` rows; a sample whose window had closed (beyond
    ``allowed_lateness``) goes to ``dead_letters`` with reason ``late_data`` (a derived
    one is counted in ``dropped["late_derived"]``: its log line or event is in its table)."""

    kind = METRICS

    def __init__(self, defn: StageDef[RollupStep], shard: int = 0):
        step = defn.config
        cfg = step.config
        self.shard, self.shards = shard, defn.shards
        self.lateness = cfg.lateness_ms
        self.coarse = max(cfg.resolutions_ms)
        self.rollup = _StageRollup(cfg.model_copy(update={"watermark_delay": _NEVER}))
        self._init_tracking(defn, cfg.delay_ms)
        self.late = {"late_data": 0, "late_derived": 0, "invalid": 0}

    def process(self, item: StageInput | StageTick) -> StageOutput | None:
        rows: dict[str, list] = {"metrics": [], "dead_letters": []}
        dropped: dict[str, int] = {}
        if isinstance(item, StageTick):  # idle advance: close what the wall time allows
            g = self._idle_advance(item)
            if g is None:
                return None
            self.rollup.close_wm = g
            self._collect(self.rollup.advance_watermark(g), rows, None, dropped)
            return self._output(rows, dropped, final=False)
        t = item.table
        release = _MIN
        tp = f"{item.topic}:{item.partition}"
        if t is not None and t.num_rows:
            self.rollup.watermark = self._own_watermark(tp)
            out = self.rollup.process(t)
            self._collect(out, rows, item, dropped)
            mx = pc.max(t.column("timestamp")).cast(pa.timestamp("ms", tz="UTC")).value
            release = (mx // self.coarse + 1) * self.coarse + self.lateness
        self._track(item, release)
        g = self._horizon()
        if g is not None:
            self.rollup.close_wm = g
            self._collect(self.rollup.advance_watermark(g), rows, item, dropped)
        return self._output(rows, dropped, final=False)

    def _collect(self, out, rows, item=None, dropped=None) -> None:
        rows["metrics"].append(out.metrics)
        if out.late is not None and out.late.num_rows:
            if item is not None and item.kind == "samples":
                rows["dead_letters"].append(_late_dead_letters(out.late, item.source, self.lateness))
                self.late["late_data"] += out.late.num_rows
            else:
                self.late["late_derived"] += out.late.num_rows
                dropped["late_derived"] = dropped.get("late_derived", 0) + out.late.num_rows
        if out.invalid is not None and out.invalid.num_rows:
            self.late["invalid"] += out.invalid.num_rows
            dropped["invalid_sample"] = dropped.get("invalid_sample", 0) + out.invalid.num_rows

    def flush(self) -> StageOutput:
        rows: dict[str, list] = {"metrics": [], "dead_letters": []}
        self.rollup.close_wm = None
        self._collect(self.rollup.flush(), rows)
        self.close_wm = _MAX
        return self._output(rows, {}, final=True)

    def _output(self, rows, dropped, final: bool) -> StageOutput:
        out = {n: t for n in rows if (t := _concat(rows[n], n)) is not None}
        return StageOutput(
            stage=METRICS,
            shard=self.shard,
            rows=out,
            positions=self.positions(final),
            shards=self.shards,
            dropped=dropped,
            watermark=_MAX if final else self.close_wm,
        )
