"""Sinks: the Iceberg writer (batched, partitioned, effectively-once through offsets in
snapshot summaries), dead-letter rows, and (later) the Kafka producer. Nothing here
imports an engine."""
