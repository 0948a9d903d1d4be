"""A real single-node Trino server that reads the project's Iceberg tables.

The tables are written by pyiceberg's ``SqlCatalog`` on PostgreSQL (the same table layout
as Iceberg's JDBC catalog) with the warehouse on an S3-compatible server; Trino's Iceberg
connector is configured with ``iceberg.catalog.type=jdbc`` and the native S3 filesystem
(custom endpoint, path-style access).

Where Trino comes from
    ``io.trino:trino-server-core:<version>:tar.gz`` plus the Iceberg plugin
    ``io.trino:trino-iceberg:<version>:zip`` from Maven Central, fetched with ``mvn`` into
    ``infra.service.cache_dir("trino", <version>)`` and unpacked there once. The core
    tarball + Iceberg plugin are about 540 MB, against about 820 MB for the full
    ``trino-server`` tarball; only the Iceberg plugin is installed, which also shortens
    start-up. Trino 476 (the newest release on Maven Central with a ``trino-server-core``
    tarball) needs Java 24.0.1 or newer: a Temurin 25 JDK is found under ``/usr/lib/jvm``,
    or set ``OBSFLOW_TRINO_JAVA_HOME``.

Python API
    ``server = start(jdbc_url=..., jdbc_user=..., jdbc_password=..., catalog_id=...,
    warehouse="s3://bucket/path", s3_endpoint=..., s3_access_key=..., s3_secret_key=...,
    s3_region=...)`` returns a :class:`TrinoServer` with ``host``, ``port``, ``url``,
    ``connect(schema=None)`` (a ``trino.dbapi`` connection, user ``obsflow``, catalog
    ``iceberg``), ``query(sql)`` (a list of rows) and ``stop()``. ``start`` returns once
    ``GET /v1/info`` reports ``"starting": false``, ``SELECT 1`` succeeds and the node
    is active in ``system.runtime.nodes``; ``query`` retries a query refused with
    ``NO_NODES_AVAILABLE`` for up to 30 s.

Command line
    ``python -m infra.trino fetch`` downloads and unpacks Trino.
    ``python -m infra.trino start [flags]`` starts a detached server and records it in
    ``run_dir("trino", "cli")/state.json``; ``status`` prints it and whether it answers;
    ``stop`` ends it. ``start`` takes the catalog settings from flags or, for every flag,
    the environment variable named beside it (secrets are best passed in the environment,
    where ``ps`` does not show them)::

        --jdbc-url        OBSFLOW_TRINO_JDBC_URL        jdbc:postgresql://127.0.0.1:5432/db
        --jdbc-user       OBSFLOW_TRINO_JDBC_USER
        --jdbc-password   OBSFLOW_TRINO_JDBC_PASSWORD
        --catalog-id      OBSFLOW_TRINO_CATALOG_ID      the pyiceberg SqlCatalog name
        --warehouse       OBSFLOW_TRINO_WAREHOUSE       s3://bucket/path
        --s3-endpoint     OBSFLOW_TRINO_S3_ENDPOINT     http://127.0.0.1:9000
        --s3-access-key   OBSFLOW_TRINO_S3_ACCESS_KEY
        --s3-secret-key   OBSFLOW_TRINO_S3_SECRET_KEY
        --s3-region       OBSFLOW_TRINO_S3_REGION       (default us-east-1)
        --port            OBSFLOW_TRINO_PORT            (default: a free port)

Secrets never reach a file or the log: the catalog file refers to them as ``${ENV:...}``
and they are handed to the Trino process in its environment.

Other settings: ``OBSFLOW_TRINO_VERSION`` (default ``476``), ``OBSFLOW_TRINO_HEAP``
(default ``2G``), ``OBSFLOW_TRINO_FULL_JIT=1`` (C2 as well as C1: slower start, faster long
queries), ``OBSFLOW_TRINO_JVM_OPTS`` (extra JVM flags). A dynamic CDS archive in the cache
directory, written when a server first stops, makes later starts quicker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from core.errors import ObsflowError
from infra.service import ManagedProcess, cache_dir, free_port, port_open, run_dir, wait_until

DEFAULT_VERSION = os.environ.get("OBSFLOW_TRINO_VERSION", "476")
DEFAULT_HEAP = os.environ.get("OBSFLOW_TRINO_HEAP", "2G")
USER = "obsflow"
HOST = "127.0.0.1"
START_TIMEOUT = 300.0

_SECRET_ENV = {
    "jdbc_password": "OBSFLOW_TRINO_SECRET_JDBC_PASSWORD",
    "s3_access_key": "OBSFLOW_TRINO_SECRET_S3_ACCESS_KEY",
    "s3_secret_key": "OBSFLOW_TRINO_SECRET_S3_SECRET_KEY",
}


class TrinoError(ObsflowError, RuntimeError):
    """Trino could not be fetched or started."""


# --------------------------------------------------------------------------- Java


def min_java(version: str) -> tuple[int, ...]:
    """The oldest Java that a Trino release starts on (from Trino's own startup checks)."""
    v = int(version)
    if v >= 479:
        return (25,)
    if v >= 476:
        return (24, 0, 1)
    if v >= 464:
        return (23,)
    if v >= 447:
        return (22,)
    if v >= 436:
        return (21,)
    return (17,)


def _java_version(java_home: Path) -> tuple[int, ...] | None:
    """The version of the JDK at ``java_home`` (from its ``release`` file, else ``java -version``)."""
    release = java_home / "release"
    text = ""
    if release.is_file():
        m = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(errors="replace"), re.M)
        text = m.group(1) if m else ""
    if not text and (java_home / "bin" / "java").exists():
        try:
            out = subprocess.run(
                [str(java_home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30
            )
            m = re.search(r'version "([^"]+)"', out.stderr)
            text = m.group(1) if m else ""
        except (OSError, subprocess.SubprocessError):
            return None
    nums = re.findall(r"\d+", text.split("+")[0].split("-")[0])
    return tuple(int(n) for n in nums) or None


def _has_vector_module(java_home: Path) -> bool:
    out = subprocess.run(
        [str(java_home / "bin" / "java"), "--list-modules"], capture_output=True, text=True, timeout=30
    )
    return "jdk.incubator.vector" in out.stdout


def find_java(version: str = DEFAULT_VERSION) -> Path:
    """A JDK home that runs Trino ``version``: ``$OBSFLOW_TRINO_JAVA_HOME``, ``$JAVA_HOME``, or the
    newest suitable JDK under ``/usr/lib/jvm``. Raises :class:`TrinoError` saying what to install."""
    need = min_java(version)
    candidates: list[Path] = []
    for var in ("OBSFLOW_TRINO_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        found = [(v, p) for p in jvm.iterdir() if p.is_dir() and not p.is_symlink() and (v := _java_version(p))]
        candidates += [p for _, p in sorted(found, reverse=True)]
    seen: list[str] = []
    for home in candidates:
        ver = _java_version(home) if (home / "bin" / "java").exists() else None
        seen.append(f"{home} ({'.'.join(map(str, ver)) if ver else 'not a JDK'})")
        if ver and ver >= need and (need < (25,) or _has_vector_module(home)):
            return home
    raise TrinoError(
        f"Trino {version} needs Java {'.'.join(map(str, need))} or newer"
        + (" with the jdk.incubator.vector module" if need >= (25,) else "")
        + "; none found among: "
        + (", ".join(seen) or "nothing")
        + ". Install a Temurin 25 JDK (e.g. apt-get install temurin-25-jdk from the Adoptium repository) "
        "or point OBSFLOW_TRINO_JAVA_HOME at a suitable JDK."
    )


# --------------------------------------------------------------------------- fetch


def _mvn_copy(artifact: str, dest: Path) -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise TrinoError(
            "Maven (`mvn`) is needed to fetch Trino from Maven Central; install it (apt-get install maven)"
        )
    out = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={dest}",
            "-Dmdep.overWriteReleases=false",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise TrinoError(f"mvn could not fetch {artifact}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    group, name, ver, ext = artifact.split(":")
    path = dest / f"{name}-{ver}.{ext}"
    if not path.is_file():
        raise TrinoError(f"mvn reported success but {path} is missing")
    return path


def fetch(version: str = DEFAULT_VERSION) -> Path:
    """Download and unpack Trino ``version`` (core server + Iceberg plugin) once; return its home.

    The unpacked tree keeps only the Iceberg plugin. A ``.complete`` marker makes later
    calls instant; a half-finished unpack is redone.
    """
    root = cache_dir("trino", version)
    home = root / f"trino-server-core-{version}"
    if (home / ".complete").is_file():
        return home
    downloads = root / f"downloads-{os.getpid()}"
    downloads.mkdir(exist_ok=True)
    core = _mvn_copy(f"io.trino:trino-server-core:{version}:tar.gz", downloads)
    iceberg = _mvn_copy(f"io.trino:trino-iceberg:{version}:zip", downloads)
    staging = root / f"staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(core) as tf:
        tf.extractall(staging, filter="tar")
    unpacked = staging / f"trino-server-core-{version}"
    for plugin in (unpacked / "plugin").iterdir():
        shutil.rmtree(plugin)
    with zipfile.ZipFile(iceberg) as zf:
        zf.extractall(staging / "iceberg-zip")
    (staging / "iceberg-zip" / f"trino-iceberg-{version}").rename(unpacked / "plugin" / "iceberg")
    (unpacked / ".complete").write_text(f"io.trino:trino-server-core:{version} + io.trino:trino-iceberg:{version}\n")
    if not (home / ".complete").is_file():  # another process may have finished first
        shutil.rmtree(home, ignore_errors=True)
        unpacked.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)  # mvn keeps its own copy in ~/.m2
    return home


# --------------------------------------------------------------------------- server


@dataclass
class TrinoServer:
    """A running Trino server on ``host:port`` with one Iceberg catalog named ``catalog``."""

    host: str
    port: int
    catalog: str
    data_dir: Path
    log: Path
    pid: int
    version: str
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def info(self) -> dict[str, Any]:
        """``GET /v1/info`` as a dict."""
        with urllib.request.urlopen(f"{self.url}/v1/info", timeout=5) as resp:
            return json.loads(resp.read())

    def connect(self, schema: str | None = None):
        """A ``trino.dbapi`` connection as user ``obsflow`` on this server's Iceberg catalog."""
        import trino.dbapi

        return trino.dbapi.connect(
            host=self.host,
            port=self.port,
            user=USER,
            catalog=self.catalog,
            schema=schema,
            http_scheme="http",
            request_timeout=120,
        )

    #: how long :meth:`query` retries a query Trino refuses with NO_NODES_AVAILABLE
    NO_NODES_RETRY_S = 30.0

    def query(self, sql: str, schema: str | None = None) -> list[list[Any]]:
        """Run one statement and return all its rows. A query refused with
        ``NO_NODES_AVAILABLE`` (the node has not announced itself to the coordinator yet,
        which can outlast ``"starting": false`` on a loaded machine) is retried for up to
        :attr:`NO_NODES_RETRY_S` seconds."""
        from trino.exceptions import TrinoQueryError

        deadline = time.monotonic() + self.NO_NODES_RETRY_S
        while True:
            conn = self.connect(schema)
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return cur.fetchall()
            except TrinoQueryError as e:
                if e.error_name != "NO_NODES_AVAILABLE" or time.monotonic() >= deadline:
                    raise
            finally:
                conn.close()
            time.sleep(0.5)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.alive()
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self, timeout: float = 30.0, remove_data: bool = False) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout``); with
        ``remove_data`` also delete its data directory (configuration and logs)."""
        if self.process is not None:
            self.process.stop(timeout)
        else:
            _kill_group(self.pid, timeout)
        if remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss_bytes(self) -> int:
        """Resident memory of the Trino JVM (0 when it is not running)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


def _kill_group(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _jvm_options(heap: str, data_dir: Path, cds_archive: Path, quick_jit: bool) -> list[str]:
    """JVM flags after Trino's recommended ``jvm.config``, sized for a small test machine.

    A dynamic CDS archive (written at the first clean exit, reused and revalidated afterwards)
    and, with ``quick_jit``, C1-only compilation roughly halve the start-up time.
    """
    return [
        "-server",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:G1HeapRegionSize=32M",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-OmitStackTraceInFastThrow",
        "-XX:ReservedCodeCacheSize=256M",
        "-XX:PerMethodRecompilationCutoff=10000",
        "-XX:PerBytecodeRecompilationCutoff=10000",
        "-XX:+EnableDynamicAgentLoading",
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:G1NumCollectionsKeepPinned=10000000",
        "-Djdk.attach.allowAttachSelf=true",
        "-Djdk.nio.maxCachedBufferSize=2000000",
        "-Dfile.encoding=UTF-8",
        "--enable-native-access=ALL-UNNAMED",
        f"-Djava.io.tmpdir={data_dir / 'tmp'}",
        f"-XX:SharedArchiveFile={cds_archive}",
        "-XX:+AutoCreateSharedArchive",
        "-Xlog:cds=off",
        "-Xlog:cds+dynamic=off",
        *(["-XX:TieredStopAtLevel=1"] if quick_jit else []),
        *os.environ.get("OBSFLOW_TRINO_JVM_OPTS", "").split(),
    ]


def _config_properties(port: int, heap_bytes: int, home: Path, data_dir: Path) -> str:
    per_node = max(256, heap_bytes // (1024 * 1024) * 4 // 10)
    headroom = max(256, heap_bytes // (1024 * 1024) * 3 // 10)
    return "\n".join(
        [
            "coordinator=true",
            "node-scheduler.include-coordinator=true",
            "node.environment=obsflow",
            f"node.id={uuid.uuid4()}",
            f"log.path={data_dir / 'server.log'}",
            "log.max-size=100MB",
            "log.max-total-size=200MB",
            f"node.bind-ip={HOST}",
            f"node.internal-address={HOST}",
            f"http-server.http.port={port}",
            f"discovery.uri=http://{HOST}:{port}",
            f"plugin.dir={home / 'plugin'}",
            f"catalog.config-dir={data_dir / 'etc' / 'catalog'}",
            "catalog.management=static",
            f"query.max-memory={per_node}MB",
            f"query.max-memory-per-node={per_node}MB",
            f"memory.heap-headroom-per-node={headroom}MB",
            "query.max-history=50",
            "http-server.log.enabled=false",
            f"log.levels-file={data_dir / 'etc' / 'log.properties'}",
            "shutdown.grace-period=1s",
            "",
        ]
    )


def _catalog_properties(
    *,
    jdbc_url: str,
    jdbc_user: str,
    catalog_id: str,
    warehouse: str,
    s3_endpoint: str,
    s3_region: str,
    jdbc_schema_version: str,
) -> str:
    return "\n".join(
        [
            "connector.name=iceberg",
            "iceberg.catalog.type=jdbc",
            "iceberg.jdbc-catalog.driver-class=org.postgresql.Driver",
            f"iceberg.jdbc-catalog.connection-url={jdbc_url}",
            f"iceberg.jdbc-catalog.connection-user={jdbc_user}",
            f"iceberg.jdbc-catalog.connection-password=${{ENV:{_SECRET_ENV['jdbc_password']}}}",
            f"iceberg.jdbc-catalog.catalog-name={catalog_id}",
            f"iceberg.jdbc-catalog.default-warehouse-dir={warehouse}",
            f"iceberg.jdbc-catalog.schema-version={jdbc_schema_version}",
            "fs.native-s3.enabled=true",
            f"s3.endpoint={s3_endpoint}",
            f"s3.region={s3_region}",
            "s3.path-style-access=true",
            f"s3.aws-access-key=${{ENV:{_SECRET_ENV['s3_access_key']}}}",
            f"s3.aws-secret-key=${{ENV:{_SECRET_ENV['s3_secret_key']}}}",
            "",
        ]
    )


def _cds_archive(version: str, java_home: Path, quick_jit: bool) -> Path:
    """Where the dynamic CDS archive for this Trino + JDK (+ JIT mode) lives in the cache."""
    java = ".".join(map(str, _java_version(java_home) or ())) or java_home.name
    return cache_dir("trino", version) / f"cds-java{java}{'-c1' if quick_jit else ''}.jsa"


def _heap_bytes(heap: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", heap)
    if not m:
        raise ValueError(f"heap must look like 2G or 1536M, not {heap!r}")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _raise_fd_limit(minimum: int = 8192) -> None:
    """Trino refuses to start below 4096 open files; lift the soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < minimum:
        target = minimum if hard == resource.RLIM_INFINITY else min(minimum, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def start(
    *,
    catalog_name: str = "iceberg",
    jdbc_url: str,
    jdbc_user: str,
    jdbc_password: str,
    catalog_id: str,
    warehouse: str,
    s3_endpoint: str,
    s3_access_key: str,
    s3_secret_key: str,
    s3_region: str = "us-east-1",
    jdbc_schema_version: str = "V1",
    port: int | None = None,
    version: str = DEFAULT_VERSION,
    heap: str = DEFAULT_HEAP,
    quick_jit: bool = not os.environ.get("OBSFLOW_TRINO_FULL_JIT"),
    data_dir: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> TrinoServer:
    """Start a single-node Trino with one Iceberg catalog (``catalog_name``) on the JDBC catalog
    ``catalog_id`` at ``jdbc_url`` and the warehouse ``warehouse`` on ``s3_endpoint``.

    ``jdbc_schema_version`` is Trino's ``iceberg.jdbc-catalog.schema-version``: ``V1`` (with the
    ``iceberg_type`` column) is what pyiceberg 0.12 creates in a fresh database; use ``V0`` for
    catalog tables created without that column. ``quick_jit`` (default, unless
    ``OBSFLOW_TRINO_FULL_JIT`` is set) compiles with C1 only: a faster start and first queries,
    slower long scans; pass ``False`` for benchmarks. Returns once the server reports it has started
    and answers ``SELECT 1``; on failure the process is stopped and the log tail is raised.
    """
    home = fetch(version)
    java_home = find_java(version)
    port = port or free_port()
    data_dir = data_dir or run_dir("trino", f"{port}-{uuid.uuid4().hex[:8]}")
    (data_dir / "etc" / "catalog").mkdir(parents=True, exist_ok=True)
    (data_dir / "tmp").mkdir(exist_ok=True)
    config = data_dir / "etc" / "config.properties"
    config.write_text(_config_properties(port, _heap_bytes(heap), home, data_dir))
    (data_dir / "etc" / "log.properties").write_text(
        "io.trino=INFO\nio.airlift=WARN\nBootstrap=WARN\norg.eclipse.jetty=WARN\n"
    )
    catalog_file = data_dir / "etc" / "catalog" / f"{catalog_name}.properties"
    catalog_file.write_text(
        _catalog_properties(
            jdbc_url=jdbc_url,
            jdbc_user=jdbc_user,
            catalog_id=catalog_id,
            warehouse=warehouse,
            s3_endpoint=s3_endpoint,
            s3_region=s3_region,
            jdbc_schema_version=jdbc_schema_version,
        )
    )
    argv = [
        str(java_home / "bin" / "java"),
        *_jvm_options(heap, data_dir, _cds_archive(version, java_home, quick_jit), quick_jit),
        f"-Dconfig={config}",
        "-cp",
        str(home / "lib" / "*"),
        "io.trino.server.TrinoServer",
    ]
    env = {
        "JAVA_HOME": str(java_home),
        _SECRET_ENV["jdbc_password"]: jdbc_password,
        _SECRET_ENV["s3_access_key"]: s3_access_key,
        _SECRET_ENV["s3_secret_key"]: s3_secret_key,
    }
    _raise_fd_limit()
    log = data_dir / "server.log"  # Trino's own log (log.path); the JVM's stdout/stderr go beside it
    proc = ManagedProcess.spawn("trino", argv, data_dir / "stdout.log", env=env, cwd=home)
    server = TrinoServer(HOST, port, catalog_name, data_dir, log, proc.popen.pid, version, proc)
    try:

        def started() -> bool:
            if not proc.alive():
                raise TrinoError(f"Trino exited with code {proc.popen.returncode}")
            return port_open(port) and server.info().get("starting") is False

        _wait(started, timeout, "Trino server", log, proc)
        _wait(lambda: server.query("SELECT 1") == [[1]], 60, "Trino query", log, proc)
        # the node takes part in queries once the coordinator has seen its announcement
        _wait(
            lambda: server.query("SELECT count(*) FROM system.runtime.nodes WHERE state = 'active'")[0][0] >= 1,
            60,
            "Trino node announcement",
            log,
            proc,
        )
    except BaseException:
        proc.stop()
        raise
    return server


def _wait(check, timeout: float, what: str, log: Path, proc: ManagedProcess) -> None:
    """``wait_until`` that gives up at once (with the log tail) when the process has exited."""

    def guarded() -> bool:
        if not proc.alive():
            return True
        return check()

    wait_until(guarded, timeout, what, log=log, interval=0.5)
    if not proc.alive():
        tails = []
        for path in (proc.log, log):
            if path.exists():
                tails.append(
                    f"--- last lines of {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
                )
        raise TrinoError(f"Trino exited with code {proc.popen.returncode} while starting\n" + "\n".join(tails))


# --------------------------------------------------------------------------- CLI

_STATE = "state.json"
_FLAGS = [
    # (flag, env var, required)
    ("jdbc-url", "OBSFLOW_TRINO_JDBC_URL", True),
    ("jdbc-user", "OBSFLOW_TRINO_JDBC_USER", True),
    ("jdbc-password", "OBSFLOW_TRINO_JDBC_PASSWORD", True),
    ("catalog-id", "OBSFLOW_TRINO_CATALOG_ID", True),
    ("warehouse", "OBSFLOW_TRINO_WAREHOUSE", True),
    ("s3-endpoint", "OBSFLOW_TRINO_S3_ENDPOINT", True),
    ("s3-access-key", "OBSFLOW_TRINO_S3_ACCESS_KEY", True),
    ("s3-secret-key", "OBSFLOW_TRINO_S3_SECRET_KEY", True),
    ("s3-region", "OBSFLOW_TRINO_S3_REGION", False),
    ("port", "OBSFLOW_TRINO_PORT", False),
]


def _state_path() -> Path:
    return run_dir("trino", "cli") / _STATE


def _load_state() -> dict[str, Any] | None:
    path = _state_path()
    return json.loads(path.read_text()) if path.is_file() else None


def _cli_server(state: dict[str, Any]) -> TrinoServer:
    return TrinoServer(
        state["host"],
        state["port"],
        state["catalog"],
        Path(state["data_dir"]),
        Path(state["log"]),
        state["pid"],
        state["version"],
    )


def settings_from_spec(spec_path: str) -> dict[str, str]:
    """The ``start`` settings (keys named like its flags, ``jdbc_url`` ...) for the tables
    of a pipeline spec whose catalog is PostgreSQL and whose warehouse is on S3, taken from
    ``storage.catalog`` with ``${VAR}`` references expanded. Raises ``ValueError`` naming
    the key when the spec's catalog cannot be shared with Trino (SQLite, a local path)."""
    from urllib.parse import unquote, urlparse

    from pipelines.loader import load_spec
    from sinks.catalog import catalog_properties

    spec = load_spec(spec_path)
    props = catalog_properties(spec.storage)
    u = urlparse(props["uri"])
    if not u.scheme.startswith("postgresql"):
        raise ValueError(
            f"{spec_path}: storage.catalog.uri is {u.scheme or 'a local SQLite'} catalog; Trino shares a "
            f"PostgreSQL one (see pipelines/examples/shared-storage.yaml)"
        )
    if not props["warehouse"].startswith(("s3://", "s3a://")):
        raise ValueError(
            f"{spec_path}: storage.catalog.warehouse is {props['warehouse']}; Trino reads an s3:// warehouse"
        )
    if not props.get("s3.endpoint"):
        raise ValueError(f"{spec_path}: storage.catalog.properties.s3.endpoint is not set")
    return {
        "jdbc_url": f"jdbc:postgresql://{u.hostname}:{u.port or 5432}{u.path}",
        "jdbc_user": unquote(u.username or ""),
        "jdbc_password": unquote(u.password or ""),
        "catalog_id": spec.storage.catalog.name,
        "warehouse": props["warehouse"].replace("s3a://", "s3://", 1),
        "s3_endpoint": props["s3.endpoint"],
        "s3_access_key": props.get("s3.access-key-id", ""),
        "s3_secret_key": props.get("s3.secret-access-key", ""),
        "s3_region": props.get("s3.region", "us-east-1"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.trino", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download and unpack Trino into the cache")
    p_start = sub.add_parser("start", help="start a detached Trino server")
    for flag, env, _ in _FLAGS:
        p_start.add_argument(f"--{flag}", default=os.environ.get(env), help=f"default ${env}")
    p_start.add_argument("--catalog-name", default="iceberg")
    p_start.add_argument(
        "--spec",
        help="take the catalog and S3 settings from this pipeline spec (PostgreSQL catalog, "
        "s3:// warehouse); flags given as well win",
    )
    sub.add_parser("stop", help="stop the server started by `start`")
    sub.add_parser("status", help="show the server started by `start`")
    args = parser.parse_args(argv)

    if args.cmd == "fetch":
        t0 = time.monotonic()
        home = fetch()
        print(f"Trino {DEFAULT_VERSION} at {home} ({time.monotonic() - t0:.1f}s); java: {find_java()}")
        return 0

    state = _load_state()
    if args.cmd == "status":
        if state is None:
            print("trino: not started")
            return 1
        server = _cli_server(state)
        try:
            info = server.info()
            print(
                f"trino: running at {server.url} (pid {server.pid}, version {info.get('nodeVersion', {}).get('version')}, "
                f"starting={info.get('starting')}, log {server.log})"
            )
            return 0
        except OSError:
            print(f"trino: not answering at {server.url} (pid {server.pid}, alive={server.alive()}, log {server.log})")
            return 1

    if args.cmd == "stop":
        if state is None:
            print("trino: not started")
            return 0
        _cli_server(state).stop()
        _state_path().unlink(missing_ok=True)
        print("trino: stopped")
        return 0

    # start
    if state is not None and _cli_server(state).alive():
        print(f"trino: already running at http://{state['host']}:{state['port']} (pid {state['pid']})")
        return 0
    if args.spec:
        try:
            from_spec = settings_from_spec(args.spec)
        except (ValueError, OSError) as e:
            parser.exit(2, f"python -m infra.trino start: --spec: {' '.join(str(e).split())}\n")
        for key, value in from_spec.items():
            if not getattr(args, key, None):
                setattr(args, key, value)
    missing = [f"--{flag} / ${env}" for flag, env, req in _FLAGS if req and not getattr(args, flag.replace("-", "_"))]
    if missing:
        parser.error("start needs: " + ", ".join(missing))
    server = start(
        catalog_name=args.catalog_name,
        jdbc_url=args.jdbc_url,
        jdbc_user=args.jdbc_user,
        jdbc_password=args.jdbc_password,
        catalog_id=args.catalog_id,
        warehouse=args.warehouse,
        s3_endpoint=args.s3_endpoint,
        s3_access_key=args.s3_access_key,
        s3_secret_key=args.s3_secret_key,
        s3_region=args.s3_region or "us-east-1",
        port=int(args.port) if args.port else None,
        data_dir=run_dir("trino", "cli", "data"),
    )
    _state_path().write_text(
        json.dumps(
            {
                "host": server.host,
                "port": server.port,
                "catalog": server.catalog,
                "pid": server.pid,
                "data_dir": str(server.data_dir),
                "log": str(server.log),
                "version": server.version,
            }
        )
    )
    print(f"trino: running at {server.url} (pid {server.pid}, log {server.log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
