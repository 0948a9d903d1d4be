"""The stage contract: what an engine hands a stage shard and what it gets back.

Guarantees: the kind names (:data:`TRACE`, :data:`METRICS`, :data:`PRODUCT`,
:data:`GLOBAL`), the items a shard receives (:class:`StageInput`, :class:`StageTick`; a
global stage also receives the other stages' :class:`StageOutput` s), what it emits
(:class:`StageOutput`: rows per table and the positions that are safe to record), the
interface every kind implements (:class:`Stage`) and the definition a shard is built from
(:class:`StageDef`). Items are keyed ``"<stage>:<shard>"``."""

from __future__ import annotations

import abc
import pickle
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar

import pyarrow as pa

from core.durations import MAX_DURATION
from schemas.tables import table_def
from transforms.shape import conform

if TYPE_CHECKING:
    from pipelines.spec import ProductStep, TailSampleStep
    from transforms.alerting.config import AlertingConfig
    from transforms.rollup.config import RollupConfig
    from transforms.tail_sampling.log_sampling import LogSamplingConfig

TRACE = "trace"
METRICS = "metrics"
PRODUCT = "product"
GLOBAL = "global"


@dataclass
class StageInput:
    """Rows for one shard from one raw batch (possibly none: every shard hears of every
    batch, so that each can report positions)."""

    stage: str
    shard: int
    kind: str  # "spans" or "logs"
    table: pa.Table | None
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    now_ms: int
    topic_partitions: int | None = None
    event_ms: int = -1  # largest event time of the whole raw batch (every shard: the same watermark)
    source: str = ""  # source name in the spec (dead letters)
    wall_ms: int = -1  # wall time the shard received it (idle advance); -1: read the clock when processed
    lag: int = -1  # records the source partition still held past this batch when it was read (-1: not known)

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.shard}"


@dataclass
class StageTick:
    """Wall time reaching a stage shard while input may be idle (Bytewax: the Kafka
    partitions' idle ticks; Beam: a processing-time timer). When the shard has had no
    input for ``idle_ms`` (``stages.idle_advance_after``; 0: never), its clock advances by
    the wall time elapsed since its last input and the stage does what a normal advance
    does; else the tick is a no-op (``process`` returns None)."""

    stage: str
    shard: int
    wall_ms: int
    idle_ms: int

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.shard}"


@dataclass
class StageOutput:
    """Rows a shard emits, per table, and the positions that are safe to record."""

    stage: str
    shard: int
    rows: dict[str, pa.Table]
    positions: dict[str, int]
    shards: int = 1
    dropped: dict[str, int] = field(default_factory=dict)
    watermark: int | None = None  # event-time horizon this shard has closed through
    extra: dict = field(default_factory=dict)  # stage-specific payload for a downstream stage (funnel tallies)
    alerts: list = field(default_factory=list)  # AlertEvents (→ Kafka alerts topic, Alertmanager)
    notifications: list = field(default_factory=list)  # Alertmanager-style notifications, for the record
    resends: list = field(default_factory=list)  # still-firing AlertEvents re-sent (→ Alertmanager only)
    counters: dict = field(default_factory=dict)  # counts since the previous output, for the run stats
    # (trace stage: TraceStage.counters' layout; recorded by runners.stats.RunStats.record_stage)

    @property
    def key(self) -> str:
        return f"{GLOBAL}:0"


_MIN = -(1 << 62)
_MAX = 1 << 62
_NEVER = MAX_DURATION  # a watermark delay that keeps a library's own watermark out of the way: the stage drives it


class Stage(abc.ABC):
    """What an engine hosts per key ``"<stage>:<shard>"``: one shard of a stage kind.

    A kind implements :meth:`process`, :meth:`flush` and :meth:`snapshot`; :meth:`create`
    builds a shard from its :class:`StageDef` or restores it from a snapshot blob (by
    default: the blob is the pickled stage). Guarantees every kind keeps: outputs carry
    only rows the shard will not emit again; ``positions`` never pass an offset whose
    rows the shard may still hold; a tick that moved nothing returns None; the state after
    ``create(defn, shard, s.snapshot())`` behaves as ``s`` would."""

    kind: ClassVar[str]  #: the stage name it is registered under (:data:`TRACE`, :data:`METRICS`, ...)

    @classmethod
    def create(cls, defn: StageDef, shard: int, blob: bytes | None = None) -> Stage:
        """Shard ``shard`` of the stage ``defn`` describes; with ``blob``, in the state
        :meth:`snapshot` captured."""
        if blob:
            return pickle.loads(zlib.decompress(blob))
        return cls(defn, shard)  # type: ignore[call-arg]  # the kinds built from a StageDef take (defn, shard)

    @abc.abstractmethod
    def process(self, item: Any) -> StageOutput | None:
        """Take one item: a :class:`StageInput` or a :class:`StageTick` (``global``: an
        upstream :class:`StageOutput` or a tick); None only for a tick that moved nothing."""

    @abc.abstractmethod
    def flush(self) -> StageOutput:
        """End of a bounded input: emit everything still held."""

    @abc.abstractmethod
    def snapshot(self) -> bytes:
        """The shard's whole state, for :meth:`create` to restore."""

    def restart_idle_clock(self, wall_ms: int) -> None:  # noqa: B027 - a no-op by default: a stage without a clock of its own
        """After a process restart, idle time counts from ``wall_ms`` (the downtime is not
        idle time of the stream). A stage without an idle clock of its own ignores it."""


class TraceConfig(NamedTuple):
    """``StageDef.config`` of the ``trace`` stage."""

    step: TailSampleStep  #: the ``tail_sample`` step (sampler, RED, log_wait, shards)
    logs: LogSamplingConfig | None = None  #: the ``log_sample`` step's config (None: no log flow is sampled)


class GlobalConfig(NamedTuple):
    """``StageDef.config`` of the ``global`` stage: each part None when the spec lacks it."""

    alerts: AlertingConfig | None  #: the alert rules (:meth:`pipelines.spec.AlertsSpec.engine_config`)
    product: ProductStep | None  #: the ``product`` step (funnels and report windows to merge)
    rollup: RollupConfig | None  #: the ``rollup`` step's config (``allowed_lateness`` of the rows alerts read)


#: ``StageDef.config`` per kind: trace -> :class:`TraceConfig`; metrics -> ``pipelines.spec.RollupStep``;
#: product -> ``pipelines.spec.ProductStep``; global -> :class:`GlobalConfig`
C = TypeVar("C")


@dataclass
class StageDef(Generic[C]):
    """One stateful stage of a spec (see :func:`pipelines.graph.plan_stages`): its kind and
    shards, the tables it writes, the topics it consumes, the topic partitions it must
    hear of before its event-time watermark moves (``expected``), the step/config it
    runs (typed per kind: ``StageDef[TraceConfig]``, ``StageDef[RollupStep]``,
    ``StageDef[ProductStep]``, ``StageDef[GlobalConfig]``), and (for ``global``) the stages
    it is fed by."""

    name: str
    shards: int
    tables: tuple
    topics: tuple
    config: C = None  # type: ignore[assignment]
    expected: tuple = ()
    upstream: dict = field(default_factory=dict)  # stage name -> (shards, topics)
    options: dict = field(default_factory=dict)
    red_topics: tuple | None = None  # trace: the topics whose event time closes RED windows (None: every topic)
    dead_letters: str = "dead_letters"  # the dead-letter table's name (stages that dead-letter late data)


class _Pickled(Stage):
    """A stage whose snapshot is the whole object, pickled (restored by :meth:`Stage.create`)."""

    def snapshot(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=5), 1)


def _concat(parts: list, name: str) -> pa.Table | None:
    parts = [p for p in parts if p is not None and p.num_rows]
    if not parts:
        return None
    tdef = table_def(name)
    parts = [conform(p, tdef) for p in parts]
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]
