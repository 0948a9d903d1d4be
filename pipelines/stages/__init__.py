"""Stateful stages: engine-agnostic objects that a runner hosts in its keyed state
(a Bytewax ``stateful`` operator, a Beam stateful ``DoFn``), one instance per shard.

Every stage kind implements the same contract (:class:`Stage`, an ABC in ``contract.py``):
``process(item) -> StageOutput``, ``flush() -> StageOutput`` (end of a bounded input),
``snapshot() -> bytes``; a stage is built or restored by name with :func:`make_stage`
(``registry.py``) from a :class:`StageDef` whose ``config`` is typed per kind (what
:func:`pipelines.graph.plan_stages` derives from the spec). The engines host any stage
kind by name: items are keyed ``"<stage>:<shard>"``. ``README.md`` next to this file maps
the modules: ``clock.py`` (event time, idle advance), ``positions.py``, ``sharding.py``, one
module per kind, and the global stage's jobs.

Stages: :class:`TraceStage` (``trace.py``), :class:`MetricsStage` (``metrics.py``, rollups),
:class:`ProductStage` (``product.py``, sessions and funnels) — all fed by the flows'
:class:`StageInput` s — and :class:`GlobalStage` (``global_stage.py``, one shard), fed by
the other stages' outputs, with three jobs in their own modules: alert rules over the
rollup rows (``alerts.py``), the product shards' funnel tallies merged into report rows
(``funnels.py``) and the trace shards' RED partials merged (``red_merge.py``).

:class:`TraceStage` (shard = hash of the trace id) consumes every span and the log lines
of the spec's log flows, and emits
- ``spans`` / ``traces``: what the tail sampler keeps (``transforms.tail_sampling``);
- RED metrics computed from *all* spans before sampling, with exemplar trace ids of kept
  traces: a window closes when the span partitions' event time (largest span start per
  partition, smallest over the partitions) passed its end + ``allowed_lateness``; closed
  windows leave as partial aggregates (``extra["red"]``, ``extra["red_through"]``) that
  the global stage merges into one ``metrics`` row per series and window; a span whose
  window had closed is a ``late_data`` dead letter (``counters["red_late_spans"]``);
- ``logs``: WARN/ERROR/FATAL always; other lines follow their trace's decision (a kept
  trace keeps all its logs), lines without a trace id are sampled by hash at once, and a
  line whose trace never shows up is sampled by hash after ``log_wait``; ``sample_rate``
  is the fraction of such lines kept (1 / the trace's adjusted count for a followed trace);
- ``spans`` of the ``head_sampling`` sources (input kind ``head_spans``): decided on arrival by
  the head sampler (same hash and salt as the ``probabilistic`` policy), never buffered,
  no obs.traces row; RED metrics still count them all;
- ``counters`` (on every output): the tail sampler's counts since the previous output.

Time is the data's: ``now`` is the ingest-time watermark over the stage's partitions
(:class:`PartitionClock`: the partitions with records to read are known from the topic
metadata at start, and one not read yet holds it), so a run's answers do not depend on
the order topics and partitions are read in, and a bounded run decides everything on
:meth:`TraceStage.flush`. A trace's ``decision_wait`` starts at its batch's ingest time.

Idle advance (``stages.idle_advance_after``, unbounded runs): a :class:`StageTick` (wall
time) reaches every shard while input is idle; once a shard has had no input for the
tick's ``idle_ms``, its clock (trace: ``now``; metrics / product: the stage watermark)
becomes the clock at its last input plus the wall time elapsed since — never backwards,
and real input resumes at max(clock, partition watermark) — and the stage does what an
advance does (decisions, closed windows and sessions, released positions). The global
stage follows the metrics shards' advanced watermarks, so alert rules (absence
included) evaluate when all input stopped. A tick that moves nothing returns None. No
idle advance while a backlog waits: an input's ``lag`` (records its partition still held
when the batch was read) above 0 holds the shard's clock until a later input from that
partition reached the end, for at most :data:`BACKLOG_HOLD` idle periods.

Positions: a stage reports, per source partition, the offset below which everything it
received has been emitted (the first offset of the oldest batch it may still hold rows
of). The sink records the smallest over shards, so a restart after a crash re-reads what
a stage still held; rows already written from those offsets are filtered by offset for
``spans`` and ``logs``; ``traces`` and RED ``metrics`` rows can be written again after a
crash (at-least-once for those two tables; exact on clean stops, which flush)."""

from pipelines.stages.clock import BACKLOG_HOLD, PartitionClock
from pipelines.stages.contract import (
    GLOBAL,
    METRICS,
    PRODUCT,
    TRACE,
    GlobalConfig,
    Stage,
    StageDef,
    StageInput,
    StageOutput,
    StageTick,
    TraceConfig,
)
from pipelines.stages.global_stage import GlobalStage, global_inputs
from pipelines.stages.metrics import MetricsStage
from pipelines.stages.product import ProductStage
from pipelines.stages.registry import STAGE_KINDS, make_stage
from pipelines.stages.sharding import split_by_shard, trace_shards
from pipelines.stages.trace import TraceStage

# Private names that stay importable from here: snapshots taken before the split pickled
# ``pipelines.stages.<class>`` (pickle finds a class as an attribute of its module), and a
# few tests import helpers by their old path.
# isort: split
from pipelines.stages.clock import _Tracked  # noqa: F401
from pipelines.stages.contract import _MAX, _MIN, _NEVER, _Pickled  # noqa: F401
from pipelines.stages.metrics import _late_dead_letters, _StageRollup  # noqa: F401
from pipelines.stages.product import _TallyReport  # noqa: F401
from pipelines.stages.trace import _late_span_dead_letters, _new_counts  # noqa: F401

__all__ = [
    "BACKLOG_HOLD",
    "GLOBAL",
    "METRICS",
    "PRODUCT",
    "STAGE_KINDS",
    "TRACE",
    "GlobalConfig",
    "GlobalStage",
    "MetricsStage",
    "PartitionClock",
    "ProductStage",
    "Stage",
    "StageDef",
    "StageInput",
    "StageOutput",
    "StageTick",
    "TraceConfig",
    "TraceStage",
    "global_inputs",
    "make_stage",
    "split_by_shard",
    "trace_shards",
]
