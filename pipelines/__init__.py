"""Declarative pipeline specs: the YAML files here, their typed model (``spec``), the
loader that reports a wrong spec with its key path (``loader``), and the engine-agnostic
graph a runner executes (``graph``)."""

from pathlib import Path

DEFAULT_SPEC = Path(__file__).parent / "observability.yaml"
