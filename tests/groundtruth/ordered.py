"""A Kafka source that reads a bounded run's partitions in a forced order, on either
engine: ``topics`` (each topic fully, one after another, partition by partition, in the
order given) or ``interleaved`` (one batch from each partition in turn).

Bytewax polls one source partition per topic partition: each partition's reader waits
for its turn (a shared gate) and answers "nothing yet" otherwise. Beam's bounded read
takes every range in one element: the first range's generator yields the whole run in
the forced order (the others yield nothing)."""

from __future__ import annotations

import threading

from runners.stats import STATS
from sources.kafka import KafkaSource, PartitionRange, PartitionReader


class Gate:
    """Whose turn it is among the partition keys."""

    def __init__(self, order: list[str], mode: str):
        self.order = list(order)
        self.mode = mode
        self.done: set[str] = set()
        self.turn = 0
        self.lock = threading.Lock()

    def _live(self) -> list[str]:
        return [k for k in self.order if k not in self.done]

    def may(self, key: str) -> bool:
        with self.lock:
            live = self._live()
            if not live:
                return True
            if self.mode == "topics":
                return live[0] == key
            return live[self.turn % len(live)] == key

    def delivered(self, key: str) -> None:
        with self.lock:
            live = self._live()
            if key in live:
                self.turn = (live.index(key) + 1) % len(live)

    def finish(self, key: str) -> None:
        with self.lock:
            live = self._live()
            if key in live:
                i = live.index(key)
                self.done.add(key)
                rest = self._live()
                self.turn = i % len(rest) if rest else 0


class GatedReader(PartitionReader):
    def __init__(self, source: OrderedKafkaSource, rng: PartitionRange):
        super().__init__(source, rng)
        self.gate = source.gate
        if self.done:
            self.gate.finish(self.part.key)

    def poll(self, timeout: float = 0.0):
        key = self.part.key
        if not self.done and not self.gate.may(key):
            return None
        b = super().poll(timeout)
        if b is not None:
            self.gate.delivered(key)
        if self.done:
            self.gate.finish(key)
        return b


class OrderedKafkaSource(KafkaSource):
    def __init__(self, spec, mode: str, topic_order: list[str], batch_size: int):
        super().__init__(spec, batch_size=batch_size, counters=STATS)
        self.mode = mode
        self.topic_order = topic_order
        self._ranges: list[PartitionRange] = []
        self.gate: Gate | None = None
        self._served = False

    def plan(self, resume, bounded):
        assert bounded, "forced read orders are for bounded runs"
        ranges = super().plan(resume, bounded)
        rank = {t: i for i, t in enumerate(self.topic_order)}
        self._ranges = sorted(ranges, key=lambda r: (rank[r.part.topic], r.part.partition))
        self.gate = Gate([r.part.key for r in self._ranges], self.mode)
        return self._ranges

    def __getstate__(self):
        d = dict(self.__dict__)
        d["gate"] = None  # Beam pickles its DoFns; the Beam path does not use the gate
        return d

    def reader(self, rng: PartitionRange):
        return GatedReader(self, rng) if self.gate is not None else PartitionReader(self, rng)

    def batches(self, part, start_offset, bounded=True, end_offset=None):
        """Beam's bounded read: the first call yields every range's batches in the forced order."""
        if self._served:
            return
        self._served = True
        its = [self.range_batches(r, PartitionReader(self, r)) for r in self._ranges]  # ungated readers
        if self.mode == "topics":
            for it in its:
                yield from it
            return
        live = its
        while live:
            nxt = []
            for it in live:
                b = next(it, None)
                if b is not None:
                    yield b
                    nxt.append(it)
            live = nxt
