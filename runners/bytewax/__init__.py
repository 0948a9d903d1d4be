"""Bytewax runner: the spec as a Bytewax dataflow (``flow``), run in one process
(``run``) or as a cluster of processes (``bytewax.run`` on ``runners.bytewax.flow:flow``)."""
