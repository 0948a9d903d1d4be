"""No crash loops: a record that still makes a flow step or a stateful stage raise is
isolated and dead-lettered with reason ``internal_error``, and the job goes on.

* Flows (:func:`process_isolated`): when :meth:`CompiledFlow.process` raises on a raw
  batch, the batch is bisected and each half processed again, down to single records;
  a record that raises alone becomes a dead letter (its raw bytes and source coordinates,
  reason ``internal_error``, detail naming the exception). The halves' outputs are merged
  into one :class:`FlowOutput` of the whole batch, so every other record ends where it
  would have.
* Stages (:class:`GuardedStage`): when a stage's ``process`` raises on an input, the stage
  is brought back to its state before that input (its last snapshot plus the inputs it
  took since, replayed), the input's rows are bisected the same way, and a row that
  raises alone becomes a dead letter (the decoded row re-encoded as JSON, as the rollups'
  ``late_data``; its source coordinates from the row). An input without rows (a tick, a
  stage output fed to the ``global`` stage) that raises is skipped and counted.

Every isolated record is counted in the run's counters, handed down by whoever hosts the
flows and stages (:class:`pipelines.graph.PipelineGraph` and :class:`GuardedStage` take
``counters=``, as the sinks and sources do; :meth:`core.stats.RunStats.record_internal_errors`:
the run summary and ``obsflow_internal_errors_total`` on ``/metrics``), and logged with its
traceback once."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import traceback
from collections import Counter

import pyarrow as pa

from core.batch import RawBatch, Rejects
from core.stats import RunStats

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
#: inputs a :class:`GuardedStage` keeps for replay before it takes a snapshot of its own
REPLAY_LIMIT = 64
_DETAIL_CHARS = 500


def describe(where: str, exc: BaseException) -> str:
    """The dead letter's detail: where it raised and the exception (type and message)."""
    msg = str(exc).replace("\n", " ")
    return f"{where} raised {type(exc).__name__}: {msg}"[:_DETAIL_CHARS]


def _count(counters: RunStats, where: str, n: int, exc: BaseException | None) -> None:
    counters.record_internal_errors(where, n)
    if exc is not None:
        log.error(
            "isolated %d record(s) that made %s raise (dead-lettered as internal_error): %s",
            n,
            where,
            "".join(traceback.format_exception(exc)).strip(),
        )


# -- flows ----------------------------------------------------------------------------------------


def sub_batch(raw: RawBatch, lo: int, hi: int) -> RawBatch:
    """Records ``[lo, hi)`` of ``raw`` as a batch of their own (same source coordinates)."""
    return dataclasses.replace(
        raw,
        values=raw.values[lo:hi],
        offsets=raw.offsets[lo:hi],
        timestamps_ms=raw.timestamps_ms[lo:hi],
        keys=raw.keys[lo:hi] if raw.keys is not None else None,
        headers=raw.headers[lo:hi] if raw.headers is not None else None,
    )


def process_isolated(flow, raw: RawBatch, counters: RunStats):
    """``flow.process(raw)``; if it raises, the batch bisected down to the records that
    raise alone, which become ``internal_error`` dead letters, counted in ``counters`` only.
    Guarantees: never raises for a record's content; ``records_in == accepted + dead +
    dropped`` still holds."""
    try:
        return flow.process(raw)
    except Exception as exc:  # noqa: BLE001 - isolated below, record by record
        first = exc
    parts: list = []
    bad: list[tuple[int, BaseException]] = []

    def attempt(lo: int, hi: int, known: BaseException | None) -> None:
        if known is None:
            try:
                parts.append(flow.process(sub_batch(raw, lo, hi)))
                return
            except Exception as exc:  # noqa: BLE001
                known = exc
        if hi - lo == 1:
            bad.append((lo, known))
            return
        mid = (lo + hi) // 2
        attempt(lo, mid, None)
        attempt(mid, hi, None)

    attempt(0, len(raw), first)
    return _merge_flow(flow, raw, parts, bad, counters)


def _merge_flow(flow, raw: RawBatch, parts: list, bad: list[tuple[int, BaseException]], counters: RunStats):
    from pipelines.graph import FlowOutput
    from sinks.dead_letters import dead_letter_rows

    rej = Rejects()
    for i, exc in bad:
        rej.add(i, INTERNAL_ERROR, describe(f"flow {flow.flow.name!r}", exc))
    dead = dead_letter_rows(raw, rej, flow.spec.dead_letters.max_raw_bytes)
    _count(counters, f"flow:{raw.source}", len(bad), bad[0][1] if bad else None)
    rows: dict[str, list[pa.Table]] = {}
    by_reason: dict[str, int] = {INTERNAL_ERROR: len(bad)} if bad else {}
    for p in parts:
        for name, t in p.rows.items():
            rows.setdefault(name, []).append(t)
        for r, n in p.dead_by_reason.items():
            by_reason[r] = by_reason.get(r, 0) + n
    rows.setdefault(flow.dead_table, []).append(dead)
    merged = {name: pa.concat_tables(ts) if len(ts) > 1 else ts[0] for name, ts in rows.items()}
    return FlowOutput(
        source=raw.source,
        topic=raw.topic,
        partition=raw.partition,
        first_offset=raw.offsets[0] if raw.offsets else -1,
        next_offset=raw.next_offset,
        rows=merged,
        records_in=len(raw),
        records_accepted=sum(p.records_accepted for p in parts),
        records_dead=sum(p.records_dead for p in parts) + len(bad),
        records_dropped=sum(p.records_dropped for p in parts),
        dead_by_reason=by_reason,
        stage_inputs=_cover(raw, [si for p in parts for si in p.stage_inputs]),
        dropped_by_reason=dict(sum((Counter(p.dropped_by_reason) for p in parts), Counter())),
    )


def _cover(raw: RawBatch, inputs: list) -> list:
    """The parts' stage inputs, with each shard's first input starting at the batch's
    first offset and its last one ending at the batch's next offset: the stages hear of
    the whole batch's positions, isolated records included."""
    first: dict = {}
    last: dict = {}
    for k, si in enumerate(inputs):
        first.setdefault(si.key, k)
        last[si.key] = k
    out = list(inputs)
    for _key, k in first.items():
        out[k] = dataclasses.replace(out[k], first_offset=raw.offsets[0])
    for _key, k in last.items():
        out[k] = dataclasses.replace(out[k], next_offset=raw.next_offset)
    return out


# -- stages ---------------------------------------------------------------------------------------


def _jsonable(v):
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    return v


def stage_dead_letters(rows: pa.Table, source: str, where: str, exc: BaseException) -> pa.Table:
    """``internal_error`` dead letters for stage rows (decoded, already scrubbed): raw is
    the row re-encoded as JSON, the coordinates are the row's own."""
    from schemas.tables import DEAD_LETTERS
    from sinks.dead_letters import require_reasons

    out = []
    for r in rows.to_pylist(maps_as_pydicts="lossy"):
        doc = {
            k: _jsonable(v)
            for k, v in r.items()
            if k not in ("source_topic", "source_partition", "source_offset", "ingested_at")
        }
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str).encode()
        out.append(
            {
                "received_at": r.get("ingested_at"),
                "reason": INTERNAL_ERROR,
                "detail": describe(where, exc) + "; raw is the decoded row re-encoded",
                "source": source or r.get("source_topic"),
                "source_topic": r.get("source_topic"),
                "source_partition": r.get("source_partition"),
                "source_offset": r.get("source_offset"),
                "raw": raw,
                "raw_size": len(raw),
                "raw_truncated": False,
            }
        )
    return require_reasons(pa.Table.from_pylist(out, schema=DEAD_LETTERS.arrow_schema()))


class GuardedStage:
    """A stage (:func:`pipelines.stages.make_stage`) whose inputs are isolated when it
    raises. ``process`` returns a list of outputs (possibly empty, possibly several: one
    per part of a bisected input, the dead letters on the last).

    To undo a failed input it keeps the stage's last snapshot (taken by the host through
    :meth:`snapshot`, or by itself every :data:`REPLAY_LIMIT` inputs) and the inputs taken
    since; a failure rebuilds the stage from them (their outputs were emitted already and
    are not emitted again).

    Isolated rows and inputs are counted in ``counters`` (the run's, handed down by the
    host) and nowhere else, so two runs in one process keep separate counts."""

    def __init__(
        self,
        defn,
        shard: int,
        blob: bytes | None = None,
        dead_table: str = "dead_letters",
        *,
        counters: RunStats,
    ):
        from pipelines.stages import make_stage

        self.defn, self.shard, self.dead_table = defn, shard, dead_table
        self.counters = counters
        self.stage = make_stage(defn, shard, blob)
        self._base = blob
        self._log: list = []

    def __getattr__(self, name):  # restart_idle_clock, positions, ... of the stage itself
        return getattr(self.__dict__["stage"], name)

    def snapshot(self) -> bytes:
        blob = self.stage.snapshot()
        self._base, self._log = blob, []
        return blob

    def _restore(self) -> None:
        from pipelines.stages import make_stage

        self.stage = make_stage(self.defn, self.shard, self._base)
        for item in self._log:
            self.stage.process(item)

    def _took(self, item) -> None:
        self._log.append(item)
        if len(self._log) >= REPLAY_LIMIT:
            self.snapshot()

    def process(self, item) -> list:
        try:
            out = self.stage.process(item)
        except Exception as exc:  # noqa: BLE001 - isolated below
            self._restore()
            return self._isolate(item, exc)
        self._took(item)
        return [] if out is None else [out]

    def flush(self) -> list:
        try:
            return [self.stage.flush()]
        except Exception as exc:  # noqa: BLE001 - what the stage still held cannot be told apart
            _count(self.counters, f"stage:{self.defn.name}:flush", 1, exc)
            return []

    def _isolate(self, item, exc: BaseException) -> list:
        where = f"{self.defn.name} stage"
        table = getattr(item, "table", None)
        if table is None or table.num_rows == 0:
            _count(self.counters, f"stage:{self.defn.name}:input", 1, exc)
            return []
        outs: list = []
        bad: list[tuple[pa.Table, BaseException]] = []

        def attempt(rows: pa.Table, known: BaseException | None) -> None:
            if known is None:
                part = dataclasses.replace(item, table=rows)
                try:
                    out = self.stage.process(part)
                except Exception as e:  # noqa: BLE001
                    known = e
                    self._restore()
                else:
                    self._took(part)
                    if out is not None:
                        outs.append(out)
                    return
            if rows.num_rows == 1:
                bad.append((rows, known))
                return
            mid = rows.num_rows // 2
            attempt(rows.slice(0, mid), None)
            attempt(rows.slice(mid), None)

        attempt(table, exc)
        if not outs:  # every row failed: the stage still hears of the input's positions
            try:
                empty = dataclasses.replace(item, table=table.slice(0, 0))
                out = self.stage.process(empty)
                self._took(empty)
                if out is not None:
                    outs.append(out)
            except Exception as e:  # noqa: BLE001
                self._restore()
                _count(self.counters, f"stage:{self.defn.name}:input", 1, e)
        dead = pa.concat_tables([stage_dead_letters(rows, getattr(item, "source", ""), where, e) for rows, e in bad])
        _count(self.counters, f"stage:{self.defn.name}", dead.num_rows, bad[0][1])
        if outs:
            last = outs[-1]
            prev = last.rows.get(self.dead_table)
            rows = dict(last.rows)
            rows[self.dead_table] = pa.concat_tables([prev, dead]) if prev is not None and prev.num_rows else dead
            outs[-1] = dataclasses.replace(last, rows=rows)
        else:
            from pipelines.stages import StageOutput

            outs.append(
                StageOutput(
                    stage=self.defn.name,
                    shard=self.shard,
                    rows={self.dead_table: dead},
                    positions={},
                    shards=self.defn.shards,
                )
            )
        return outs
