"""Where `obsflow submit` finds Beam's Flink job server (``runners.flink_job_server``): the
jar a fetch cached, or ``$OBSFLOW_FLINK_JOB_SERVER_JAR``; never by importing the test
services' tooling (``infra``), which fetches into that same place."""

from __future__ import annotations

import pytest

from runners import flink_job_server as located
from runners.beam.flink import SubmitError, flink_options


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSFLOW_CACHE", str(tmp_path))
    monkeypatch.delenv(located.JAR_ENV, raising=False)
    return tmp_path


def _cache_jar(name: str = "job-server-launcher.jar"):
    root = located.job_server_dir()
    root.mkdir(parents=True)
    (root / name).write_bytes(b"PK")
    (root / located.COMPLETE).write_text(name)
    return root / name


def test_nothing_cached_is_none_and_submit_says_what_to_do(empty_cache):
    assert (
        located.job_server_dir()
        == empty_cache / "beam-flink-job-server" / f"flink-{located.FLINK_MINOR}-beam-{located.beam_version()}"
    )
    assert located.cached_job_server_jar() is None
    with pytest.raises(SubmitError) as e:
        flink_options("127.0.0.1:8081")
    assert f"none is cached in {located.job_server_dir()}" in str(e.value)
    assert "python -m infra.flink fetch" in str(e.value) and "--job-endpoint" in str(e.value)


def test_a_fetch_left_without_its_marker_is_not_used(empty_cache):
    root = located.job_server_dir()
    root.mkdir(parents=True)
    (root / "half.jar").write_bytes(b"PK")
    assert located.cached_job_server_jar() is None


def test_the_cached_jar_is_what_submit_starts(empty_cache):
    jar = _cache_jar()
    assert located.cached_job_server_jar() == jar
    opts = flink_options("127.0.0.1:8081", java="/opt/java/bin/java")
    assert f"--flink_job_server_jar={jar}" in opts and "--runner=FlinkRunner" in opts
    assert f"--flink_version={located.FLINK_MINOR}" in opts and "--job_server_java_launcher=/opt/java/bin/java" in opts


def test_the_environment_wins_and_must_name_a_file(empty_cache, monkeypatch):
    _cache_jar()
    given = empty_cache / "mine.jar"
    given.write_bytes(b"PK")
    monkeypatch.setenv(located.JAR_ENV, str(given))
    assert located.cached_job_server_jar() == given
    monkeypatch.setenv(located.JAR_ENV, str(empty_cache / "missing.jar"))
    with pytest.raises(located.FlinkSetupError, match="missing.jar is not a file"):
        located.cached_job_server_jar()
    with pytest.raises(SubmitError, match="missing.jar is not a file"):
        flink_options("127.0.0.1:8081")


def test_a_given_jar_or_endpoint_needs_no_cache(empty_cache):
    assert "--flink_job_server_jar=/x/js.jar" in flink_options(
        "127.0.0.1:8081", job_server_jar="/x/js.jar", java="java"
    )
    opts = flink_options("127.0.0.1:8081", job_endpoint="js:8099")
    assert "--runner=PortableRunner" in opts and "--job_endpoint=js:8099" in opts


def test_the_test_tooling_fetches_into_the_place_the_runner_reads(empty_cache):
    from infra import flink

    assert flink.FlinkSetupError is located.FlinkSetupError and flink.FLINK_MINOR == located.FLINK_MINOR
    jar = _cache_jar()
    assert flink.job_server_jar() == jar  # the marker is there: no fetch
