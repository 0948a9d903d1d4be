"""The running job's health in the Prometheus text format, on ``/metrics``.

``obsflow run --metrics-port N`` (``0``: a free port, printed) starts :func:`serve`: an
HTTP server thread (``prometheus_client``) whose collector reads the process-local
counters of :mod:`runners.stats` at each scrape — nothing is counted twice.

Metrics (all prefixed ``obsflow_``):

=====================================  =========  ============================================
name                                   type       labels
=====================================  =========  ============================================
records_in_total                       counter    source
records_accepted_total                 counter    source
records_dead_lettered_total            counter    source
records_dropped_total                  counter    source (counted decisions: sampling, duplicates)
items_in_total                         counter    source (sources accepted per item: OTLP spans, log
                                                  records, data points; a message rejected whole
                                                  counts one item)
items_accepted_total                   counter    source
items_dead_lettered_total              counter    source
items_dropped_total                    counter    source (counted sampling decisions)
records_dropped_by_reason_total        counter    source, reason (duplicate: an event envelope its
                                                  partition already carried, transforms.dedupe)
dead_letters_total                     counter    source, reason
rows_written_total                     counter    table (rows committed to Iceberg)
commits_total                          counter    table
commit_duration_seconds                histogram  table (one observation per Iceberg commit)
commit_rows                            histogram  table (commit size, rows)
commit_retries_total                   counter    table, cause (conflict: another writer committed
                                                  first; outage: storage or catalog unreachable)
consumer_position                      gauge      topic, partition (next offset the job reads)
consumer_high_watermark                gauge      topic, partition (as last fetched)
consumer_lag                           gauge      topic, partition (high watermark − position)
kafka_produced_total                   counter    topic (alerts, dead letters delivered)
kafka_delivery_failures_total          counter    topic (not delivered after retries)
tail_sampling_dropped_spans_total      counter    reason (not_sampled, policy_drop, num_traces_overflow,
                                                  max_trace_size, late_after_drop, no_trace_id)
tail_sampling_dropped_traces_total     counter    reason (as above, traces)
tail_sampling_early_decisions_total    counter    reason (num_traces_overflow, max_trace_size)
tail_sampling_traces_total             counter    decision (sampled, not_sampled)
tail_sampling_late_spans_kept_total    counter    (late spans kept by a cached decision)
internal_errors_total                  counter    where (flow:<source>, stage:<stage>: records a step
                                                  raised on, dead-lettered as internal_error;
                                                  stage:<stage>:input / :flush: inputs skipped)
run_started_timestamp_seconds          gauge
=====================================  =========  ============================================

Only what runs in this process is seen (Bytewax ``run_main``, Beam's in-process
DirectRunner); on Flink the engine's own metrics apply."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from runners.stats import STATS, RunStats

PREFIX = "obsflow"


class StatsCollector:
    """A ``prometheus_client`` collector over a :class:`RunStats`."""

    def __init__(self, stats: RunStats = STATS):
        self.stats = stats

    def collect(self):
        s = self.stats.snapshot()
        by_source = s["by_source"]
        sources = sorted({src for src, what in by_source if not what.startswith("items_")})
        for what, name, doc in (
            ("in", "records_in", "records read from the sources"),
            ("accepted", "records_accepted", "records that became table rows"),
            ("dead", "records_dead_lettered", "records rejected into the dead letters"),
            ("dropped", "records_dropped", "records dropped by a counted decision (sampling, duplicate)"),
        ):
            m = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["source"])
            for src in sources:
                m.add_metric([src], by_source.get((src, what), 0))
            yield m
        item_sources = sorted({src for src, what in by_source if what == "items_in"})
        for what, name, doc in (
            (
                "in",
                "items_in",
                ("items read (spans, log records, data points of OTLP messages; a message rejected whole counts one)"),
            ),
            ("accepted", "items_accepted", "items that became table rows"),
            ("dead", "items_dead_lettered", "items rejected into the dead letters"),
            ("dropped", "items_dropped", "items dropped by a counted sampling decision"),
        ):
            m = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["source"])
            for src in item_sources:
                m.add_metric([src], by_source.get((src, f"items_{what}"), 0))
            yield m
        m = CounterMetricFamily(
            f"{PREFIX}_records_dropped_by_reason",
            "dropped records whose flow names a reason (duplicate: an event envelope its partition already carried)",
            labels=["source", "reason"],
        )
        for (src, reason), n in sorted(s["dropped_by_source_reason"].items()):
            m.add_metric([src, reason], n)
        yield m
        m = CounterMetricFamily(f"{PREFIX}_dead_letters", "dead letters by reason", labels=["source", "reason"])
        for (src, reason), n in sorted(s["dead_by_source_reason"].items()):
            m.add_metric([src, reason], n)
        yield m
        m = CounterMetricFamily(f"{PREFIX}_rows_written", "rows committed to the Iceberg tables", labels=["table"])
        for t, n in sorted(s["rows_by_table"].items()):
            m.add_metric([t], n)
        yield m
        m = CounterMetricFamily(f"{PREFIX}_commits", "Iceberg commits", labels=["table"])
        for t, n in sorted(s["commits_by_table"].items()):
            m.add_metric([t], n)
        yield m
        m = CounterMetricFamily(
            f"{PREFIX}_commit_retries", "Iceberg commit attempts retried, by cause", labels=["table", "cause"]
        )
        for (t, cause), n in sorted(s["commit_retries"].items()):
            m.add_metric([t, cause], n)
        yield m
        for key, name, doc in (
            ("commit_latency", "commit_duration_seconds", "Iceberg commit latency (retries included)"),
            ("commit_size", "commit_rows", "rows per Iceberg commit"),
        ):
            m = HistogramMetricFamily(f"{PREFIX}_{name}", doc, labels=["table"])
            for t, h in sorted(s[key].items()):
                m.add_metric([t], h.buckets(), h.total)
            yield m
        pos = GaugeMetricFamily(
            f"{PREFIX}_consumer_position", "next offset the job reads", labels=["topic", "partition"]
        )
        high = GaugeMetricFamily(
            f"{PREFIX}_consumer_high_watermark",
            "partition high watermark as last fetched",
            labels=["topic", "partition"],
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag", "records behind the high watermark", labels=["topic", "partition"]
        )
        for _, p in sorted(s["partitions"].items()):
            labels = [p.topic, str(p.partition)]
            pos.add_metric(labels, p.position)
            high.add_metric(labels, p.high)
            lag.add_metric(labels, p.lag)
        yield pos
        yield high
        yield lag
        for key, name, doc in (
            ("produced", "kafka_produced", "messages delivered to Kafka output topics"),
            ("delivery_failures", "kafka_delivery_failures", "messages not delivered after retries"),
        ):
            m = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["topic"])
            for t, n in sorted(s[key].items()):
                m.add_metric([t], n)
            yield m
        ts = s.get("tail_sampling", {})
        for key, name, label, doc in (
            (
                "dropped_spans",
                "tail_sampling_dropped_spans",
                "reason",
                "spans the tail sampler did not keep, by reason",
            ),
            (
                "dropped_traces",
                "tail_sampling_dropped_traces",
                "reason",
                "traces the tail sampler did not keep, by reason",
            ),
            (
                "early_decisions",
                "tail_sampling_early_decisions",
                "reason",
                "traces decided before their wait, by reason",
            ),
            ("traces", "tail_sampling_traces", "decision", "traces decided by the tail sampler"),
        ):
            m = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=[label])
            for (k, reason), n in sorted(ts.items()):
                if k == key:
                    m.add_metric([reason], n)
            yield m
        yield CounterMetricFamily(
            f"{PREFIX}_tail_sampling_late_spans_kept",
            "late spans kept by a cached decision",
            value=ts.get(("late_spans_kept", ""), 0),
        )
        m = CounterMetricFamily(
            f"{PREFIX}_internal_errors",
            "records isolated because a step raised on them (dead-lettered as internal_error)",
            labels=["where"],
        )
        for where, n in sorted(s.get("internal_errors", {}).items()):
            m.add_metric([where], n)
        yield m
        yield GaugeMetricFamily(
            f"{PREFIX}_run_started_timestamp_seconds", "when the run started (epoch seconds)", value=s["started"]
        )


def registry(stats: RunStats = STATS) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatsCollector(stats))
    return reg


class MetricsServer:
    """The ``/metrics`` HTTP server thread; :attr:`port` is the bound port."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", stats: RunStats = STATS):
        self.server, self.thread = start_http_server(port, addr=host, registry=registry(stats))
        self.host = host
        self.port = self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if isinstance(self.thread, threading.Thread):
            self.thread.join(5)


def serve(port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
    """Start serving ``/metrics`` on ``host:port`` (0: a free port) in a daemon thread."""
    return MetricsServer(port, host)
