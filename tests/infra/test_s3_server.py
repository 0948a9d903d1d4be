"""The real MinIO server: objects round-trip, listings are exact, restarts keep data,
and a pyiceberg SqlCatalog (PostgreSQL + S3) writes and reads a table."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from infra import s3
from infra.service import port_open

pytestmark = pytest.mark.storage


def _bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def test_endpoint_and_properties(s3_server: s3.S3Server) -> None:
    assert s3_server.endpoint == f"http://127.0.0.1:{s3_server.port}"
    props = s3_server.pyiceberg_properties()
    assert props["s3.endpoint"] == s3_server.endpoint
    assert props["s3.access-key-id"] == s3_server.access_key
    assert props["s3.secret-access-key"] == s3_server.secret_key
    assert props["s3.region"] == s3_server.region == "us-east-1"
    assert props["s3.force-virtual-addressing"] == "false"
    assert s3_server.secret_key not in repr(s3_server)


def test_credentials_are_not_in_the_log(s3_server: s3.S3Server) -> None:
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    text = s3_server.log.read_text(errors="replace")
    assert s3_server.secret_key not in text
    assert s3_server.access_key not in text


def test_wrong_credentials_are_rejected(s3_server: s3.S3Server) -> None:
    from dataclasses import replace

    bucket = _bucket()
    s3_server.create_bucket(bucket)
    impostor = replace(s3_server, secret_key="not-the-secret-" + uuid.uuid4().hex, _process=None)
    with pytest.raises(OSError, match="SIGNATURE_DOES_NOT_MATCH|ACCESS_DENIED"):
        impostor.list_objects(bucket)


def test_write_read_and_exact_listing(s3_server: s3.S3Server) -> None:
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    assert s3_server.list_objects(bucket) == []
    objects = {
        "a.txt": b"alpha",
        "dir/b.bin": bytes(range(256)) * 1000,
        "dir/sub/c.json": b'{"k": 1}',
        "dirx/d": b"",
    }
    for key, data in objects.items():
        s3_server.put_object(bucket, key, data)
    for key, data in objects.items():
        assert s3_server.get_object(bucket, key) == data
    assert s3_server.list_objects(bucket) == sorted(objects)
    assert s3_server.list_objects(bucket, "dir/") == ["dir/b.bin", "dir/sub/c.json"]
    assert s3_server.list_objects(bucket, "dir") == ["dir/b.bin", "dir/sub/c.json", "dirx/d"]
    assert s3_server.list_objects(bucket, "dir/sub/c") == ["dir/sub/c.json"]
    assert s3_server.list_objects(bucket, "nothing/") == []
    with pytest.raises(FileNotFoundError):
        s3_server.get_object(bucket, "missing")


def test_restart_and_kill_keep_data(s3_server: s3.S3Server) -> None:
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    s3_server.put_object(bucket, "before/stop", b"1")
    port, data_dir, secret = s3_server.port, s3_server.data_dir, s3_server.secret_key

    s3_server.stop()
    assert not s3_server.alive() and not port_open(port)
    s3_server.restart()
    assert (s3_server.port, s3_server.data_dir, s3_server.secret_key) == (port, data_dir, secret)
    assert s3_server.get_object(bucket, "before/stop") == b"1"

    s3_server.put_object(bucket, "before/kill", b"2")
    s3_server.kill()
    assert not s3_server.ready()
    s3_server.restart()
    assert s3_server.list_objects(bucket) == ["before/kill", "before/stop"]
    assert s3_server.get_object(bucket, "before/kill") == b"2"


def test_iceberg_table_roundtrip(shared_catalog, s3_server: s3.S3Server) -> None:
    n = 1000
    data = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"event-{i}" for i in range(n)], pa.string()),
            "value": pa.array([i * 0.5 for i in range(n)], pa.float64()),
        }
    )
    shared_catalog.create_namespace("obs")
    table = shared_catalog.create_table("obs.events", schema=data.schema)
    table.append(data)

    reloaded = shared_catalog.load_table("obs.events")
    back = reloaded.scan().to_arrow().sort_by("id")
    assert back.num_rows == n
    assert back.column("id").to_pylist() == list(range(n))
    assert back.column("name").to_pylist() == [f"event-{i}" for i in range(n)]
    assert back.column("value").to_pylist() == [i * 0.5 for i in range(n)]

    bucket = shared_catalog.properties["bucket"]
    keys = s3_server.list_objects(bucket, "warehouse/")
    data_files = sorted(t.file.file_path for t in reloaded.scan().plan_files())
    assert data_files and all(p.startswith(f"s3://{bucket}/warehouse/") for p in data_files)
    assert {p.removeprefix(f"s3://{bucket}/") for p in data_files} <= set(keys)
    assert any(k.endswith(".parquet") for k in keys)
    assert any(k.endswith(".metadata.json") for k in keys)
    assert reloaded.metadata_location.removeprefix(f"s3://{bucket}/") in keys
