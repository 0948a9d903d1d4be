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
