"""The real PostgreSQL server: password logins, databases, and the Iceberg SQL catalog's tables."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from infra import postgres

pytestmark = pytest.mark.storage


def test_urls(postgres_server: postgres.PostgresServer) -> None:
    s = postgres_server
    assert s.host == "127.0.0.1"
    assert s.jdbc_url == f"jdbc:postgresql://127.0.0.1:{s.port}/{s.database}"
    assert s.sqlalchemy_url.startswith(f"postgresql+psycopg2://{s.user}:")
    assert s.sqlalchemy_url.endswith(f"@127.0.0.1:{s.port}/{s.database}")
    assert s.password not in repr(s)


def test_accepts_password_login(postgres_server: postgres.PostgresServer) -> None:
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database(), inet_server_addr()::text, inet_server_port()")
            assert cur.fetchone() == (
                postgres_server.user,
                postgres_server.database,
                "127.0.0.1/32",
                postgres_server.port,
            )
            cur.execute("CREATE TABLE t (x int)")
            cur.execute("INSERT INTO t SELECT generate_series(1, 10)")
            cur.execute("SELECT sum(x) FROM t")
            assert cur.fetchone() == (55,)
        conn.rollback()
    finally:
        conn.close()


def test_rejects_wrong_password(postgres_server: postgres.PostgresServer) -> None:
    import psycopg2
    from dataclasses import replace

    impostor = replace(postgres_server, password="wrong-" + uuid.uuid4().hex, _process=None)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        impostor.connect()


def test_sqlalchemy_and_create_database(postgres_server: postgres.PostgresServer) -> None:
    import sqlalchemy

    name = f"db_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    engine = sqlalchemy.create_engine(postgres_server.sqlalchemy_url_for(name))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == name
    finally:
        engine.dispose()
    postgres_server.drop_database(name)
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_catalog_tables_live_in_postgres(shared_catalog, postgres_server: postgres.PostgresServer) -> None:
    shared_catalog.create_namespace("obs", {"owner": "tests"})
    schema = pa.schema([("id", pa.int64())])
    table = shared_catalog.create_table("obs.t1", schema=schema)
    table.append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))

    conn = postgres_server.connect(shared_catalog.properties["database"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            assert [r[0] for r in cur.fetchall()] == ["iceberg_namespace_properties", "iceberg_tables"]
            cur.execute("SELECT catalog_name, table_namespace, table_name, metadata_location FROM iceberg_tables")
            rows = cur.fetchall()
            assert len(rows) == 1
            assert rows[0][:3] == ("obsflow", "obs", "t1")
            assert rows[0][3] == shared_catalog.load_table("obs.t1").metadata_location
            assert rows[0][3].startswith(f"s3://{shared_catalog.properties['bucket']}/warehouse/")
            cur.execute(
                "SELECT property_key, property_value FROM iceberg_namespace_properties "
                "WHERE catalog_name = 'obsflow' AND namespace = 'obs' ORDER BY property_key"
            )
            assert ("owner", "tests") in cur.fetchall()
    finally:
        conn.close()


def test_restart_keeps_data_and_credentials() -> None:
    server = postgres.start()
    try:
        conn = server.connect()
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (x text)")
            cur.execute("INSERT INTO kept VALUES ('survives')")
        conn.close()
        port, password = server.port, server.password
        server.restart()
        assert (server.port, server.password) == (port, password)
        conn = server.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT x FROM kept")
            assert cur.fetchall() == [("survives",)]
        conn.close()
    finally:
        server.stop(remove_data=True)
    assert not server.alive()
    assert not server.data_dir.exists()


def test_starts_from_a_process_whose_fork_handlers_would_kill_a_forked_child() -> None:
    """A CI run once hung here: after the Flink tests (Beam's gRPC in the test process),
    PostgreSQL never started; gRPC's fork handlers ran in the child that was to become the
    server (it logged an epoll error into postgres.log) and stalled it before exec. That
    child was forked because ``Popen(user=...)`` cannot vfork; the server is now started
    through ``setpriv``, so no fork handler runs. Checked in a separate process that
    registers ``abort`` as a fork handler for children: any forked child dies at once."""
    code = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.__register_atfork.argtypes = [ctypes.c_void_p] * 4\n"  # what pthread_atfork calls (glibc)
        "assert libc.__register_atfork(None, None, ctypes.cast(libc.abort, ctypes.c_void_p).value, None) == 0\n"
        "from infra import postgres\n"
        "server = postgres.start()\n"
        "server.restart()\n"
        "server.connect().close()\n"
        "server.stop(remove_data=True)\n"
        "print('started')\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0 and out.stdout.strip() == "started", out.stderr[-2000:]
