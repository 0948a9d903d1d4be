"""Shared types below every other package (schemas, transforms, sinks, sources, pipelines,
runners): nothing here imports from the project."""
