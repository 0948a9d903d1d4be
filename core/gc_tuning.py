"""A process's garbage-collector settings: ``collect.gc_young_threshold`` (the collector,
:func:`collector.server.build_door`) and ``process.gc_young_threshold`` (each process of
``obsflow run``: the Bytewax workers' processes, Beam's DirectRunner and its SDK workers on
Flink), with their default and bound written once here.

A product-event request of 50 envelopes, or a batch of a few thousand records, makes many
container objects (the parsed records, their normalized copies, rows), thousands of them
alive at once. With Python's default thresholds (a young collection every 700 new
containers) the cyclic collector then runs over and over through the same live objects,
promoting them into the old generations whose collections walk the whole heap (the
imported modules, the graph and its lookup tables, the producer): about a quarter of the
collector's CPU under load, 7–8% of a Kafka → Iceberg run's CPU a record (bench/README.md). Those objects hold
no cycles and are freed by reference counting as soon as they are used; the collector has
almost nothing to find."""

from __future__ import annotations

import gc
import os
import threading

#: the young-generation threshold a process runs with unless its spec says otherwise
DEFAULT_YOUNG_THRESHOLD = 10_000
#: the largest threshold a spec may set
MAX_YOUNG_THRESHOLD = 10_000_000

_once = threading.Lock()
_tuned_in: int | None = None  # the pid whose collector tune_gc_once set (a forked child sets its own)


def tune_gc(young_threshold: int) -> bool:
    """With ``young_threshold`` > 0: collect once, freeze every object alive now (the
    imported modules, the app, the graph, the producer: later collections never walk them
    again; they live as long as the process anyway), and run a young collection only after
    ``young_threshold`` new container objects; the older generations' thresholds are kept.
    Cycles made later are still found and freed, only in larger steps. With 0 nothing
    changes. Returns whether the settings changed."""
    if young_threshold <= 0:
        return False
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    return True


def tune_gc_once(young_threshold: int) -> bool:
    """:func:`tune_gc` the first time it is called in this process (any thread; a process
    forked after the call counts as a new one); later calls change nothing. Returns whether
    this call changed the settings."""
    global _tuned_in
    with _once:
        if _tuned_in == os.getpid():
            return False
        _tuned_in = os.getpid()
        return tune_gc(young_threshold)
