"""Event time of a stage shard: the partition watermark, the idle advance and the
backlog hold.

Guarantees: a stage's watermark is the smallest progress over the source partitions it
expects, so answers do not depend on the order partitions are read in
(:class:`PartitionClock` for the trace stage, :class:`_Tracked` for the windowed metrics and
product stages); it never moves backwards; a partition known at start and not read yet
holds it; when input has been idle for ``stages.idle_advance_after`` the clock advances by
the wall time elapsed since the last input (:func:`_idle_elapsed`), except while a backlog
waits (for at most :data:`BACKLOG_HOLD` idle periods)."""

from __future__ import annotations

import time
from collections import deque

from pipelines.stages.contract import _MIN, StageDef, StageInput, StageTick, _Pickled
from pipelines.stages.positions import held_positions, hold_batch


def _input_wall(item: StageInput) -> int:
    return item.wall_ms if item.wall_ms >= 0 else int(time.time() * 1000)


def _note_lag(stage, item: StageInput) -> None:
    """Remember how far behind its partition's end the shard's latest input from that
    partition was (:func:`_behind`)."""
    if item.lag >= 0:
        lags = getattr(stage, "_lags", None)
        if lags is None:
            lags = stage._lags = {}
        lags[f"{item.topic}:{item.partition}"] = item.lag


def _behind(stage) -> bool:
    """Whether the latest input from some partition left records unread behind it: a
    backlog waits (a broker restart or a slow fetch in the middle of a replay), so input
    stopping is not the stream going quiet and must not move event time."""
    return any(lag > 0 for lag in getattr(stage, "_lags", {}).values())


#: how long a backlog mark holds the idle advance, in idle periods (``stages.idle_advance_after``)
BACKLOG_HOLD = 12


def _idle_elapsed(last_wall: int | None, tick: StageTick, behind: bool = False) -> int | None:
    """Wall time since the last input when it is at least the tick's idle period, else
    None. While a backlog waits (``behind``) the stream is not idle for
    :data:`BACKLOG_HOLD` idle periods (a minute at the default 5 s): enough for a broker
    restart, and bounded, so that a lag that never drains (records the consumer cannot
    see, such as a transaction still open) delays the idle advance but does not stop it."""
    if tick.idle_ms <= 0 or last_wall is None:
        return None
    elapsed = tick.wall_ms - last_wall
    if behind and elapsed < BACKLOG_HOLD * tick.idle_ms:
        return None
    return elapsed if elapsed >= tick.idle_ms else None


class PartitionClock:
    """The stage's clock: an event-time watermark over source partitions.

    Each partition's progress is the largest time seen from it; the watermark is the
    smallest progress over the partitions the stage reads. Which partitions:

    - ``expected`` (``topic:partition`` keys known at start, from the topic metadata: every
      partition of every topic the stage reads that has records to read): one not read
      yet holds the watermark, whatever the read order, until it delivers;
    - partitions of a topic the stage was not told of at start are learnt from the inputs
      (all of a topic's partitions when the source says how many there are); one of them
      that never shows up while ``idle_batches`` batches per partition came from others
      stops holding time (a stage restored from an old snapshot, a source without metadata).

    A partition that delivered and then sent no batch while ``idle_batches`` batches came
    from others is idle and stops holding time back — unless its latest batch left records
    behind it (``lag`` > 0: it has a backlog, so its data is still to come)."""

    def __init__(self, idle_batches: int = 16, expected=()):
        self.progress: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.expected: dict[str, int] = {}
        self.batches = 0
        self.idle_batches = idle_batches
        self.known: set[str] = set(expected)
        self.lags: dict[str, int] = {}

    def observe(
        self, topic: str, partition: int, ingest_ms: int | None, topic_partitions: int | None, lag: int = -1
    ) -> int:
        """Note a batch of ``topic:partition`` whose largest time is ``ingest_ms`` (None or
        negative: the batch had no time, the partition is seen but does not progress)."""
        self.batches += 1
        tp = f"{topic}:{partition}"
        if ingest_ms is not None and ingest_ms >= 0:
            self.progress[tp] = max(self.progress.get(tp, 0), ingest_ms)
        self.last_seen[tp] = self.batches
        self.__dict__.setdefault("lags", {})[tp] = lag
        if topic_partitions:
            self.expected[topic] = max(self.expected.get(topic, 0), topic_partitions)
        return self.watermark()

    def watermark(self) -> int:
        wm = None
        known: set[str] = getattr(self, "known", set())
        lags = getattr(self, "lags", {})
        keys = set(self.progress) | known
        for topic, n in self.expected.items():
            keys.update(f"{topic}:{p}" for p in range(n))
        for tp in keys:
            seen = self.last_seen.get(tp)
            if seen is not None and self.batches - seen > self.idle_batches and lags.get(tp, -1) <= 0:
                continue  # idle: delivered, caught up (or not known to be behind), and silent since
            if tp not in self.progress:
                if tp in known:
                    return 0  # known at start, not read yet: hold time
                if seen is None and self.batches > self.idle_batches * max(1, len(keys)):
                    continue  # learnt, never showed up while all others kept coming: treat as idle
                return 0  # not read yet: hold time
            wm = self.progress[tp] if wm is None else min(wm, self.progress[tp])
        return wm if wm is not None else max(self.progress.values(), default=0)

    def idle_base(self) -> int:
        """Where an idle advance starts from: the watermark over the partitions that have
        delivered (a partition never read does not hold an idle clock at 0; an idle one
        is skipped as in :meth:`watermark`)."""
        live = [v for tp, v in self.progress.items() if self.batches - self.last_seen.get(tp, 0) <= self.idle_batches]
        return min(live) if live else max(self.progress.values(), default=0)


class _Tracked(_Pickled):
    """Event time and positions for stages that hold rows until a horizon passes.

    Each source partition has its own watermark (largest event time it delivered −
    delay), so whether a record is late does not depend on how an engine interleaves
    partitions; the stage's watermark (what closes windows and sessions) is the smallest
    over the partitions it expects, so no partition's on-time data finds its window
    closed. A batch's first offset is held (positions) until the horizon passes the
    windows its rows went into."""

    def _init_tracking(self, defn: StageDef, delay_ms: int):
        self.expected = tuple(defn.expected)
        self.delay = delay_ms
        self._batches: dict[str, deque] = {}
        self._latest: dict[str, int] = {}
        self.wm: dict[str, int] = {}
        self.close_wm: int | None = None
        self._idle_wall: int | None = None  # wall time of the last input (idle advance)
        self._idle_from: int | None = None  # the watermark an idle advance starts from
        self._lags: dict[str, int] = {}  # partition -> records left behind its latest input (_behind)

    def restart_idle_clock(self, wall_ms: int) -> None:
        """After a process restart, idle time counts from the restart (see
        :meth:`TraceStage.restart_idle_clock`)."""
        if getattr(self, "_idle_wall", None) is not None:
            self._idle_wall = wall_ms

    def _idle_advance(self, tick: StageTick) -> int | None:
        """Idle advance: after ``tick.idle_ms`` without input, the stage watermark is the one
        at the last input (over the partitions that delivered: a partition never read does
        not hold it) plus the wall time elapsed since; it only moves forward. The new
        ``close_wm`` if it moved, else None."""
        elapsed = _idle_elapsed(getattr(self, "_idle_wall", None), tick, _behind(self))
        base = getattr(self, "_idle_from", None)
        if elapsed is None or base is None:
            return None
        g = base + elapsed
        if self.close_wm is not None and g <= self.close_wm:
            return None
        self.close_wm = g
        return g

    def _own_watermark(self, tp: str) -> int | None:
        w = max(self.wm.get(tp, _MIN), self.close_wm if self.close_wm is not None else _MIN)
        return None if w == _MIN else w

    def _track(self, item: StageInput, release_at: int) -> str:
        tp = f"{item.topic}:{item.partition}"
        hold_batch(self._batches, self._latest, tp, item.first_offset, item.next_offset, release_at)
        if item.event_ms >= 0:
            self.wm[tp] = max(self.wm.get(tp, _MIN), item.event_ms - self.delay)
        self._idle_wall = _input_wall(item)
        _note_lag(self, item)
        if self.wm:  # the watermark once this input is through (_horizon), where an idle advance starts
            self._idle_from = max(min(self.wm.values()), self.close_wm if self.close_wm is not None else _MIN)
        return tp

    def _horizon(self) -> int | None:
        """The stage watermark if it moved, else None."""
        keys = set(self.expected) | set(self.wm)
        if not keys or any(k not in self.wm for k in keys):
            return None
        g = min(self.wm[k] for k in keys)
        if self.close_wm is None or g > self.close_wm:
            self.close_wm = g
            return g
        return None

    def positions(self, final: bool = False) -> dict[str, int]:
        """Per partition: everything below this offset has been emitted by this shard (a
        batch is released once the stage watermark passed its ``release_at``)."""
        return held_positions(
            self._batches, self._latest, lambda at: final or (self.close_wm is not None and at <= self.close_wm)
        )
