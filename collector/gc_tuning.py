"""The collector process's garbage-collector settings (``collect.gc_young_threshold``).

A product-event request of 50 envelopes makes a few hundred container objects (the parsed
envelopes, their normalized copies, records), and with tens of requests in flight
thousands of them are alive at once. With Python's default thresholds (a young collection
every 700 new containers) the cyclic collector then runs over and over through the same
live objects, promoting them into the old generations whose collections walk the whole
heap (the imported modules, the app, the producer): about a quarter of the collector's
CPU under load (bench/README.md). Those objects hold no cycles and are freed by reference
counting as soon as the request is answered; the collector has almost nothing to find."""

from __future__ import annotations

import gc


def tune_gc(young_threshold: int) -> bool:
    """With ``young_threshold`` > 0: collect once, freeze every object alive now (the
    imported modules, the app, the producer: later collections never walk them again; they
    live as long as the process anyway), and run a young collection only after
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
