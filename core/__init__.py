"""Shared types below every other package (schemas, transforms, sinks, sources, pipelines,
runners): the raw batch and the batch of rows (:mod:`core.batch`), the run counters
(:mod:`core.stats`), durations (:mod:`core.durations`) and the error base with its exit codes
(:mod:`core.errors`). Nothing here imports from the project.

:data:`LAYERS` is the one statement of the import order; ``tests/core/test_layers.py`` fails on
a run-time import that goes up it (imports under ``if TYPE_CHECKING:`` are types only)."""

#: the import layers, lowest first: a module may import its own layer and the ones before it.
#: A name is a package or a module; a module is in the layer of its longest listed prefix
#: (``pipelines.spec`` is the spec model, below the sources and sinks it configures; the rest
#: of ``pipelines`` plans and hosts the stages above them). ``infra/`` (the test services'
#: tooling), ``bench/`` and ``tests/`` are above every layer: nothing layered imports them.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("schemas",),
    ("transforms",),
    ("pipelines.spec", "pipelines.collect_spec"),
    ("sources", "sinks"),
    ("pipelines",),
    ("runners", "collector", "ui"),
)
