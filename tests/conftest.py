"""Shared test setup: the real-service fixtures (each starts its server on 127.0.0.1 on
first use and stops it at the end of the session) and a pseudonymization key."""

import os

os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "obsflow-test-key-0123456789")

pytest_plugins = [
    "tests.fixtures.storage",
    "tests.fixtures.kafka",
    "tests.fixtures.trino",
    "tests.fixtures.flink",
]


# Service markers, given by what a test uses, so that `make test-fast` (-m "not services")
# selects the tests that need no server. A test gets `services` and one marker per service
# it starts: through a fixture (also when requested by another fixture), or by being in a
# module that starts the service itself.
SERVICE_FIXTURES: dict[str, frozenset[str]] = {
    "kafka": frozenset({"kafka_broker", "private_kafka_broker", "kafka_topic_factory", "kafka_topic"}),
    "storage": frozenset({"s3_server", "postgres_server", "shared_catalog"}),
    "trino": frozenset({"trino_server", "trino_catalog", "trino_catalog_properties"}),
    "flink": frozenset({"flink_cluster", "flink_beam_options"}),
    "alertmanager": frozenset({"alertmanager_server", "config_alertmanager", "real_alertmanager"}),
    "prometheus": frozenset({"prometheus"}),
}
SERVICE_MODULES: dict[str, str] = {  # module path (from tests/) -> the service it starts itself
    "alerting/test_alertmanager_differential.py": "alertmanager",
    "alerting/test_prometheus_differential.py": "prometheus",
    "e2e/test_alerts_pipeline.py": "alertmanager",
    "tail_sampling/test_otel_collector.py": "otel_collector",
    "collect/test_tracker_browser.py": "browser",
    "infra/test_kafka_broker.py": "kafka",
    "infra/test_s3_server.py": "storage",
    "infra/test_postgres_server.py": "storage",
    "infra/test_trino_server.py": "trino",
    "infra/test_flink_cluster.py": "flink",
}
SERVICE_MARKERS = ("kafka", "storage", "trino", "flink", "alertmanager", "prometheus", "otel_collector", "browser")


def pytest_collection_modifyitems(config, items) -> None:
    """Give every test that needs a service the `services` marker and that service's marker."""
    import pathlib

    import pytest

    root = pathlib.Path(__file__).parent
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        wanted = {svc for svc, fixtures in SERVICE_FIXTURES.items() if names & fixtures}
        try:
            rel = pathlib.Path(str(item.fspath)).relative_to(root).as_posix()
        except ValueError:
            rel = ""
        if rel in SERVICE_MODULES:
            wanted.add(SERVICE_MODULES[rel])
        wanted |= {m for m in SERVICE_MARKERS if item.get_closest_marker(m) is not None}
        for svc in sorted(wanted):
            if item.get_closest_marker(svc) is None:
                item.add_marker(getattr(pytest.mark, svc))
        if wanted:
            item.add_marker(pytest.mark.services)
