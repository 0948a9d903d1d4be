"""Build and run the Beam pipeline for a spec.

Transforms (each consumes → emits):
- ``Partitions``: ``Create`` of the source's partition keys;
- ``ReadEmbedded``: a partition key → the :class:`RawBatch` items of that partition,
  from the position the tables record;
- ``Process``: :class:`ProcessBatches` hosting :class:`pipelines.graph.PipelineGraph`
  → :class:`FlowOutput`;
- ``WriteIceberg``: :class:`WriteIceberg` buffering outputs in an
  :class:`sinks.iceberg.IcebergSink` per DoFn instance, committing by rows and seconds
  and at the end of every bundle (so a bundle's output is durable before Beam considers
  it done).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.graph import PipelineGraph
from pipelines.spec import PipelineSpec
from runners.stats import STATS
from sinks.iceberg import IcebergSink
from sources.generator import EmbeddedSource


class ReadEmbedded(beam.DoFn):
    def __init__(self, source: EmbeddedSource, resume: dict[str, int]):
        self.source = source
        self.resume = resume

    def process(self, key: str):
        part = next(p for p in self.source.partitions() if p.key == key)
        yield from self.source.batches(part, self.resume.get(key, 0))


class ProcessBatches(beam.DoFn):
    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.records_in = Metrics.counter("obsflow", "records_in")
        self.accepted = Metrics.counter("obsflow", "records_accepted")
        self.dead = Metrics.counter("obsflow", "records_dead")

    def setup(self):
        self.graph = PipelineGraph(self.spec)

    def process(self, raw):
        out = self.graph.process(raw)
        self.records_in.inc(out.records_in)
        self.accepted.inc(out.records_accepted)
        self.dead.inc(out.records_dead)
        STATS.add_output(out)
        yield out


class WriteIceberg(beam.DoFn):
    def __init__(self, spec: PipelineSpec, tables: list[str]):
        self.spec = spec
        self.tables = tables

    def setup(self):
        self.sink = IcebergSink(self.spec, self.tables)

    def process(self, out):
        self.sink.write(out)

    def finish_bundle(self):
        before = self.sink.stats.commits
        self.sink.flush(include_empty=True)
        if self.sink.stats.commits != before:
            STATS.add_commits(self.sink.stats)
            self.sink.stats = type(self.sink.stats)()

    def teardown(self):
        self.sink.close()


def build_pipeline(p: beam.Pipeline, spec: PipelineSpec, source: EmbeddedSource, resume: dict[str, int]):
    tables = PipelineGraph.tables_by_topic(spec)
    names = sorted({t for ts in tables.values() for t in ts})
    keys = [part.key for part in source.partitions()]
    return (
        p
        | "Partitions" >> beam.Create(keys)
        | "ReadEmbedded" >> beam.ParDo(ReadEmbedded(source, resume))
        | "Process" >> beam.ParDo(ProcessBatches(spec))
        | "WriteIceberg" >> beam.ParDo(WriteIceberg(spec, names))
    )


def direct_options(extra: list[str] | None = None) -> PipelineOptions:
    """DirectRunner options that stay offline (no Prism download) and in-process."""
    return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory", *(extra or [])])
