"""Engine adapters and the command line.

``beam/`` and ``bytewax/`` translate the engine-agnostic graph (``pipelines.graph``) into
each engine's operators; ``job`` holds what both share (sources, resume positions, the
run summary); ``cli`` is the ``obsflow`` command."""
