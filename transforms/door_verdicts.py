"""Verdicts of ``obsflow collect`` that travel with the records it wrote.

A record the door rejected (not JSON, not the wire schema, too large, too old for a public
key, an OTLP message the pipeline's codec cannot decode) is still written to the signal's
topic, with the Kafka headers :data:`REJECT_HEADER` (the reason code) and
:data:`DETAIL_HEADER` (the detail), so that it ends in ``obs.dead_letters`` like every
other reject: with its source topic, partition and offset, its raw bytes scrubbed, counted
in the run's statistics, and effectively once with the rest of its partition.

:func:`apply_door_verdicts` runs right after decoding: such a record becomes one whole-record
reject with the door's reason and detail, whatever the codec made of it (its decoded rows,
if any, are dropped; a codec reject of it is replaced)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.batch import INDEX, Batch, Rejects

REJECT_HEADER = "obsflow_reject"
DETAIL_HEADER = "obsflow_reject_detail"
#: reason codes the door gives; another value becomes ``format_violation`` naming it
DOOR_REASONS = frozenset({"format_violation", "schema_violation", "size_violation", "timestamp_out_of_range"})
MAX_DETAIL = 2000


def door_verdicts(headers: list[list[tuple[str, bytes | None]] | None] | None) -> dict[int, tuple[str, str]]:
    """``{record index: (reason, detail)}`` for the records that carry a door verdict."""
    out: dict[int, tuple[str, str]] = {}
    if not headers:
        return out
    for i, hs in enumerate(headers):
        if not hs:
            continue
        reason = detail = None
        for name, value in hs:
            if name == REJECT_HEADER and value is not None:
                reason = value.decode("utf-8", "replace").strip()
            elif name == DETAIL_HEADER and value is not None:
                detail = value.decode("utf-8", "replace")[:MAX_DETAIL]
        if reason is None:
            continue
        detail = detail if detail else "rejected by obsflow collect"
        if reason not in DOOR_REASONS:
            reason, detail = "format_violation", f"door verdict with an unknown reason {reason[:100]!r}: {detail}"
        out[i] = (reason, detail)
    return out


def apply_door_verdicts(batch: Batch) -> Batch:
    """``batch`` with each door-rejected record rejected whole with the door's reason and
    detail (and no rows left from it); other records untouched."""
    verdicts = door_verdicts(batch.raw.headers)
    if not verdicts:
        return batch
    batch.drop_rejected()
    old = batch.rejects
    rejects = Rejects()
    for i, r, d, item in zip(old.indices, old.reasons, old.details, old.items):
        if i not in verdicts:
            rejects.add(i, r, d, item)
    for i, (reason, detail) in sorted(verdicts.items()):
        rejects.add(i, reason, detail)
    batch.rejects = rejects
    if batch.table.num_rows:
        gone = np.isin(batch.table.column(INDEX).to_numpy(), np.fromiter(verdicts, dtype=np.int64))
        if gone.any():
            batch.table = batch.table.filter(pa.array(~gone))
    if batch.items_in is not None:
        for i in verdicts:
            batch.items_in[i] = 1  # a record rejected whole counts one item
    return batch
