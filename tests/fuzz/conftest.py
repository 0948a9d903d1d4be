"""Hypothesis profiles for the fuzz suite: ``ci`` (the default: derandomized, so every
run tries the same examples; no deadline, since the machine is shared) and ``long``
(``make fuzz``: many more examples, random, still no deadline). Pick one with
``OBSFLOW_FUZZ=long``; ``OBSFLOW_FUZZ_EXAMPLES=N`` overrides the number of examples."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = dict(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "ci", max_examples=int(os.environ.get("OBSFLOW_FUZZ_EXAMPLES", 30)), derandomize=True, **_common
)
settings.register_profile("long", max_examples=int(os.environ.get("OBSFLOW_FUZZ_EXAMPLES", 3000)), **_common)
settings.load_profile(os.environ.get("OBSFLOW_FUZZ", "ci"))
