"""Issue 19: ``/metrics`` carries the per-item counts the run summary has (items in /
accepted / dead-lettered / dropped, per source accepted per item), read from the real
endpoint (``runners.metrics.MetricsServer``) after OTLP messages went through
``PipelineGraph.process`` and the run stats, as a runner records them."""

from __future__ import annotations

from runners.metrics import MetricsServer
from runners.stats import RunStats
from tests.codecs.test_otlp_items import graph, run, span, trace_msg  # noqa: F401 (graph: a fixture)
from tests.runners.test_metrics_endpoint import scrape, values


def test_metrics_endpoint_counts_items(graph):  # noqa: F811
    spans = [span(k) for k in range(10)]
    spans[3] = span(3, start_time_unix_nano=0)
    spans[8] = span(8, kind=9)
    values_ = [
        trace_msg(spans).SerializeToString(),
        b"\x0a\xff\x01 not protobuf",
        trace_msg([span(0, trace=2)]).SerializeToString(),
    ]
    out, _ = run(graph, "spans", values_)
    assert (out.items_in, out.items_dead) == (10 + 1 + 1, 3)
    stats = RunStats()
    stats.add_output(out)
    server = MetricsServer(0, stats=stats)
    try:
        m = scrape(server.url)
    finally:
        server.stop()
    assert values(m, "obsflow_records_in_total", "source") == {("spans",): 3.0}
    assert values(m, "obsflow_records_dead_lettered_total", "source") == {("spans",): 1.0}
    assert values(m, "obsflow_items_in_total", "source") == {("spans",): 12.0}
    assert values(m, "obsflow_items_dead_lettered_total", "source") == {("spans",): 3.0}
    assert values(m, "obsflow_items_accepted_total", "source") == {("spans",): float(out.items_accepted)}
    assert values(m, "obsflow_items_dropped_total", "source") == {("spans",): float(out.items_dropped)}
    assert out.items_accepted + out.items_dropped == 9
