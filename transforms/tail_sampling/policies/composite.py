"""``composite``: sub-policies in ``policy_order`` (or their listed order), each with a
share of ``max_total_spans_per_second``. For each trace, the first sub-policy that returns
Sampled (or InvertSampled) decides: the trace is Sampled when that sub-policy's spans in
the current second plus the trace's spans stay within its allocation (and within
``max_total_spans_per_second``), otherwise NotSampled — later sub-policies are not tried
(as the collector). Counters restart every second of the decision clock.

Allocation: ``percent`` of the total for each ``rate_allocation`` entry; a sub-policy
without an entry, or with percent 0, gets ``total / number of sub-policies`` (the Collector
v0.161.0's ``getRateAllocationMap``). With ``unallocated_share: remainder`` (ours) a
sub-policy without an entry gets an equal part of what the entries leave unallocated
instead (an entry with percent 0 still gets ``total / number of sub-policies``).

Difference kept on purpose: ``policy_order`` is honoured (the Collector v0.161.0 reads the
key but evaluates sub-policies in ``composite_sub_policy`` order); leave it empty for the
Collector's order. The per-second counters run on the decision clock, not the wall clock."""

import numpy as np

from ..decision import IS, NS, S
from .base import Policy


class Composite(Policy):
    kind = "composite"
    stateful = True

    def __init__(self, name: str, cfg, subs: dict[str, Policy]):
        super().__init__(name)
        order = list(cfg.policy_order) or [p.name for p in cfg.composite_sub_policy]
        order += [p.name for p in cfg.composite_sub_policy if p.name not in order]
        self.subs = [subs[n] for n in order]
        self.max_total = cfg.max_total_spans_per_second
        total = float(cfg.max_total_spans_per_second)
        alloc: dict[str, float] = {}
        for a in cfg.rate_allocation:
            alloc[a.policy] = (a.percent / 100.0) * total if a.percent > 0 else total / len(self.subs)
        rest = [n for n in order if n not in alloc]
        if rest and getattr(cfg, "unallocated_share", "equal") == "remainder":
            left = max(0.0, total - sum(alloc.values()))
            for n in rest:
                alloc[n] = left / len(rest)
        for n in rest:
            alloc.setdefault(n, total / len(self.subs))
        self.allocated = [int(alloc[n]) for n in order]
        self.sampled = [0] * len(self.subs)
        self.second: int | None = None
        self.needs_bytes = any(p.needs_bytes for p in self.subs)

    def children(self):
        return self.subs

    def evaluate(self, view, idx):
        sec = view.now_ms // 1000
        if sec != self.second:
            self.second = sec
            self.sampled = [0] * len(self.subs)
        pre = [None if s.stateful else s.evaluate(view, idx) for s in self.subs]
        out = np.full(len(idx), NS, dtype=np.int8)
        counts = view.span_count
        for k, i in enumerate(idx.tolist()):
            for j, sub in enumerate(self.subs):
                d = pre[j][k] if pre[j] is not None else sub.evaluate(view, np.array([i]))[0]
                if d == S or d == IS:
                    total = self.sampled[j] + int(counts[i])
                    if total <= self.allocated[j] and total <= self.max_total:
                        self.sampled[j] = total
                        out[k] = S
                    break
        return out

    def get_state(self):
        return (self.second, list(self.sampled))

    def set_state(self, state):
        self.second, sampled = state
        self.sampled = list(sampled)
