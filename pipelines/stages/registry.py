"""The stage registry: build or restore any stage kind by name.

Guarantees: :func:`make_stage` returns a shard of the kind ``defn.name`` names, in the
state a :meth:`Stage.snapshot` blob captured when one is given."""

from __future__ import annotations

import pickle
import zlib

from pipelines.stages.contract import GLOBAL, METRICS, PRODUCT, TRACE, StageDef
from pipelines.stages.global_stage import GlobalStage
from pipelines.stages.metrics import MetricsStage
from pipelines.stages.product import ProductStage
from pipelines.stages.trace import TraceStage


def make_stage(defn: StageDef, shard: int, blob: bytes | None = None):
    """Build (or, with ``blob``, restore) shard ``shard`` of the stage ``defn`` describes."""
    if defn.name == TRACE:
        step, log_config = defn.config
        head = defn.options.get("head")
        args = (defn.expected, getattr(defn, "red_topics", None), getattr(defn, "dead_letters", "dead_letters"))
        return TraceStage.restore(step, log_config, shard, blob, head, *args) if blob else TraceStage(step, log_config, shard, head, *args)
    if blob:
        return pickle.loads(zlib.decompress(blob))
    kind = STAGE_KINDS[defn.name]
    return kind(defn, shard)


STAGE_KINDS = {METRICS: MetricsStage, PRODUCT: ProductStage, GLOBAL: GlobalStage}
