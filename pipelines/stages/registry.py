"""The stage registry: build or restore any stage kind by name.

Guarantees: :func:`make_stage` returns a shard of the kind ``defn.name`` names (one of
:data:`STAGE_KINDS`), in the state a :meth:`Stage.snapshot` blob captured when one is
given; an unknown name is a ``ValueError`` naming it and the known kinds."""

from __future__ import annotations

from pipelines.stages.contract import Stage, StageDef
from pipelines.stages.global_stage import GlobalStage
from pipelines.stages.metrics import MetricsStage
from pipelines.stages.product import ProductStage
from pipelines.stages.trace import TraceStage

#: stage name -> the class implementing it
STAGE_KINDS: dict[str, type[Stage]] = {k.kind: k for k in (TraceStage, MetricsStage, ProductStage, GlobalStage)}


def make_stage(defn: StageDef, shard: int, blob: bytes | None = None) -> Stage:
    """Build (or, with ``blob``, restore) shard ``shard`` of the stage ``defn`` describes."""
    kind = STAGE_KINDS.get(defn.name)
    if kind is None:
        raise ValueError(f"no stage kind {defn.name!r} (known: {', '.join(sorted(STAGE_KINDS))})")
    return kind.create(defn, shard, blob)
