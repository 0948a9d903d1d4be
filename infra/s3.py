"""A real S3-compatible object store for tests and local use: MinIO, built from source.

MinIO is built once with ``go install github.com/minio/minio@<release>`` (module, build
and binary caches under :func:`infra.service.cache_dir`, never the repository) and run in
single-drive mode on ``127.0.0.1`` with random credentials generated per :func:`start`.

Python API::

    srv = start()                  # -> S3Server, ready to serve requests
    srv.create_bucket("b")
    srv.list_objects("b", "warehouse/")
    srv.pyiceberg_properties()     # FileIO properties for pyiceberg (PyArrow FileIO)
    srv.restart()                  # same port, data dir and credentials: data survives
    srv.stop()

Command line: ``python -m infra.s3 start|stop|status|fetch``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ObsflowError
from infra.service import ManagedProcess, cache_dir, free_port, port_open, run_dir, wait_until

#: The MinIO release that is built, and the Go module version the proxy resolves it to.
MINIO_RELEASE = "RELEASE.2025-09-07T16-13-09Z"
MINIO_MODULE_VERSION = "v0.0.0-20250907161309-07c3a429bfed"
MINIO_MODULE = "github.com/minio/minio"

DEFAULT_REGION = "us-east-1"
STATE_FILE = "state.json"


class S3SetupError(ObsflowError, RuntimeError):
    """MinIO could not be fetched, built or started; the message says what to install or run."""


# --------------------------------------------------------------------------- fetch/build


def _go_binary() -> str:
    """Path of the ``go`` tool: ``$OBSFLOW_GO``, ``go`` on PATH, or ``/usr/local/go/bin/go``."""
    candidates = [os.environ.get("OBSFLOW_GO"), shutil.which("go"), "/usr/local/go/bin/go"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise S3SetupError(
        "the Go toolchain is needed to build MinIO: install Go >= 1.24 (https://go.dev/dl/) "
        "and put `go` on PATH, or set OBSFLOW_GO to its path"
    )


def _go_env() -> dict[str, str]:
    gopath = cache_dir("go")
    return {
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(cache_dir("go", "build-cache")),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }


def minio_binary_path() -> Path:
    """Where the MinIO binary of :data:`MINIO_RELEASE` lives once built (it may not exist yet)."""
    override = os.environ.get("OBSFLOW_MINIO_BIN")
    if override:
        return Path(override)
    return cache_dir("minio", MINIO_RELEASE) / "minio"


def fetch(quiet: bool = False) -> Path:
    """Build MinIO if it is not cached yet; return the path of an executable MinIO binary.

    Safe to call from concurrent processes (a file lock serialises the build) and
    idempotent: a cached binary is returned at once. The binary is installed atomically,
    so a half-built file is never picked up.
    """
    target = minio_binary_path()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if os.environ.get("OBSFLOW_MINIO_BIN"):
        raise S3SetupError(f"OBSFLOW_MINIO_BIN points to {target}, which is not an executable file")
    go = _go_binary()
    lock_path = target.parent / ".build.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        staging = target.parent / f".staging-{os.getpid()}"
        staging.mkdir(exist_ok=True)
        log = target.parent / "build.log"
        if not quiet:
            print(f"building MinIO {MINIO_RELEASE} with {go} (first time only; log: {log})", file=sys.stderr)
        started = time.monotonic()
        with open(log, "wb") as fh:
            rc = subprocess.call(
                [go, "install", "-trimpath", "-ldflags=-s -w", f"{MINIO_MODULE}@{MINIO_MODULE_VERSION}"],
                env={**os.environ, **_go_env(), "GOBIN": str(staging)},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=target.parent,
            )
        built = staging / "minio"
        if rc != 0 or not built.is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise S3SetupError(
                f"`go install {MINIO_MODULE}@{MINIO_MODULE_VERSION}` failed (exit {rc}); it needs the Go "
                f"module proxy (proxy.golang.org) reachable. Last lines of {log}:\n{tail}"
            )
        os.replace(built, target)
        shutil.rmtree(staging, ignore_errors=True)
        if not quiet:
            print(f"built {target} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return target


# --------------------------------------------------------------------------- server handle


@dataclass
class S3Server:
    """A running MinIO bound to 127.0.0.1; credentials are random per :func:`start`.

    ``restart()`` reuses port, data directory and credentials, so objects survive and
    clients configured with :meth:`pyiceberg_properties` keep working.
    """

    port: int
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str
    data_dir: Path
    log: Path
    binary: Path
    _process: ManagedProcess | None = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.popen.pid if self._process else self._pid

    # ---- lifecycle

    def _spawn(self, timeout: float) -> None:
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_REGION": self.region,
            "MINIO_SITE_REGION": self.region,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            "MINIO_PROMETHEUS_AUTH_TYPE": "jwt",
        }
        certs = self._certs_dir()
        certs.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.binary),
            "server",
            "--quiet",
            "--anonymous",
            "--address",
            f"127.0.0.1:{self.port}",
            "--certs-dir",
            str(certs),
            str(self.data_dir),
        ]
        self._process = ManagedProcess.spawn("minio", argv, self.log, env=env, cwd=self.data_dir.parent)
        self._pid = self._process.popen.pid
        try:
            wait_until(self._ready, timeout, f"MinIO on {self.endpoint}", log=self.log)
        except TimeoutError:
            self._process.stop()
            raise

    def _ready(self) -> bool:
        if self._process is not None and not self._process.alive():
            tail = self.log.read_text(errors="replace").splitlines()[-20:] if self.log.exists() else []
            raise S3SetupError(f"MinIO exited while starting; see {self.log}:\n" + "\n".join(tail))
        with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as r:
            return r.status == 200

    def alive(self) -> bool:
        """True if the server process exists (it may still be starting)."""
        if self._process is not None:
            return self._process.alive()
        return self._pid is not None and _pid_alive(self._pid)

    def ready(self) -> bool:
        """True if the server answers its readiness probe now."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def stop(self, remove_data: bool = False) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after 20s); optionally delete its data."""
        if self._process is not None:
            self._process.stop()
        elif self._pid is not None:
            _stop_pid(self._pid, signal.SIGTERM, 20.0)
        self._wait_port_closed()
        if remove_data:  # a default server owns its parent dir minio-<id> (data, certs, log)
            if self._owns_parent():
                shutil.rmtree(self.data_dir.parent, ignore_errors=True)
            else:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                shutil.rmtree(self._certs_dir(), ignore_errors=True)

    def _owns_parent(self) -> bool:
        return self.data_dir.parent.name.startswith("minio-")

    def _certs_dir(self) -> Path:
        if self._owns_parent():
            return self.data_dir.parent / "certs"
        return self.data_dir.parent / (self.data_dir.name + "-certs")

    def kill(self) -> None:
        """SIGKILL the server at once (crash simulation); data written so far stays on disk."""
        if self._process is not None:
            self._process.kill()
        elif self._pid is not None:
            _stop_pid(self._pid, signal.SIGKILL, 5.0)
        self._wait_port_closed()

    def start(self, timeout: float = 60.0) -> None:
        """Start a stopped server again on the same port, data directory and credentials."""
        if self.alive():
            raise S3SetupError(f"MinIO on {self.endpoint} is already running")
        self._spawn(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (if running) and start again on the same port, data dir and credentials."""
        if self.alive():
            self.stop()
        self._spawn(timeout)

    def _wait_port_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and port_open(self.port):
            time.sleep(0.05)

    # ---- client helpers

    def filesystem(self):
        """A ``pyarrow.fs.S3FileSystem`` for this server (path-style, bucket creation allowed)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=self.endpoint,
            scheme="http",
            force_virtual_addressing=False,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            connect_timeout=2.0,
            request_timeout=30.0,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; a bucket that already exists is left as it is."""
        self.filesystem().create_dir(name)

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Write ``data`` to ``s3://bucket/key`` (replacing any object there)."""
        with self.filesystem().open_output_stream(f"{bucket}/{key}") as out:
            out.write(data)

    def get_object(self, bucket: str, key: str) -> bytes:
        """Read the whole object ``s3://bucket/key``; raises ``FileNotFoundError`` if absent."""
        with self.filesystem().open_input_stream(f"{bucket}/{key}") as f:
            return f.readall()

    def list_objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Sorted keys of all objects in ``bucket`` whose key starts with ``prefix`` (string prefix)."""
        from pyarrow import fs

        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        selector = fs.FileSelector(f"{bucket}/{base}".rstrip("/"), recursive=True, allow_not_found=True)
        keys = []
        for info in self.filesystem().get_file_info(selector):
            if info.type == fs.FileType.File:
                key = info.path.split("/", 1)[1]
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def pyiceberg_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties for this server (PyArrow FileIO, path-style addressing).

        ``s3.path-style-access`` is the Java FileIO spelling, included for JVM readers.
        """
        return {
            "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": self.region,
            "s3.force-virtual-addressing": "false",
            "s3.path-style-access": "true",
            "s3.connect-timeout": "5",
        }

    def to_state(self) -> dict:
        return {
            "pid": self.pid,
            "port": self.port,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "data_dir": str(self.data_dir),
            "log": str(self.log),
            "binary": str(self.binary),
        }

    @classmethod
    def from_state(cls, state: dict) -> S3Server:
        return cls(
            port=state["port"],
            access_key=state["access_key"],
            secret_key=state["secret_key"],
            region=state["region"],
            data_dir=Path(state["data_dir"]),
            log=Path(state["log"]),
            binary=Path(state["binary"]),
            _pid=state.get("pid"),
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _stop_pid(pid: int, sig: int, timeout: float) -> None:
    """Signal the process group led by ``pid`` and wait for it; SIGKILL after ``timeout``."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start(
    data_dir: Path | None = None, port: int | None = None, region: str = DEFAULT_REGION, timeout: float = 60.0
) -> S3Server:
    """Start MinIO on 127.0.0.1 and return once it answers its readiness probe.

    Builds MinIO first if needed (see :func:`fetch`). ``data_dir`` defaults to a fresh
    directory under ``run_dir("s3")``; ``port`` defaults to a free port. Credentials are
    random for every call and are never written to logs.
    """
    binary = fetch()
    if data_dir is None:
        data_dir = run_dir("s3") / f"minio-{uuid.uuid4().hex[:12]}" / "data"
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (
        data_dir.parent / "minio.log"
        if data_dir.parent.name.startswith("minio-")
        else data_dir.parent / f"{data_dir.name}.log"
    )
    server = S3Server(
        port=port or free_port(),
        access_key="obs" + secrets.token_hex(8),
        secret_key=secrets.token_urlsafe(30),
        region=region,
        data_dir=data_dir,
        log=log,
        binary=binary,
    )
    server._spawn(timeout)
    return server


# --------------------------------------------------------------------------- command line


def _state_path() -> Path:
    return run_dir("s3") / STATE_FILE


def attach() -> S3Server:
    """Handle on the server started by ``python -m infra.s3 start``; raises if none is running."""
    path = _state_path()
    if not path.exists():
        raise S3SetupError("no S3 server started from the command line: run `python -m infra.s3 start`")
    server = S3Server.from_state(json.loads(path.read_text()))
    if not server.alive():
        raise S3SetupError(f"the S3 server recorded in {path} is not running: run `python -m infra.s3 start`")
    return server


def _write_state(server: S3Server) -> None:
    path = _state_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(server.to_state(), f, indent=2)


def create_bucket_for_spec(spec_path: str, name: str | None = None) -> tuple[str, str, bool]:
    """Create the S3 bucket of a spec's warehouse (``s3://BUCKET/...``), or ``name``, with
    the spec's S3 settings (``storage.catalog.properties``, ``${VAR}`` expanded). Returns
    ``(bucket, endpoint, created)``; ``created`` is False when it already existed."""
    from pyarrow import fs

    from pipelines.loader import load_spec
    from sinks.catalog import catalog_properties, s3_filesystem

    spec = load_spec(spec_path)
    props = catalog_properties(spec.storage)
    wh = props["warehouse"]
    if name is None:
        if not wh.startswith(("s3://", "s3a://")):
            raise S3SetupError(
                f"{spec_path}: storage.catalog.warehouse is {wh}, not an s3:// URL: give the bucket name"
            )
        name = wh.split("://", 1)[1].split("/", 1)[0]
    filesystem = s3_filesystem(props, allow_bucket_creation=True)
    if filesystem.get_file_info(name).type != fs.FileType.NotFound:
        return name, props.get("s3.endpoint", "AWS S3"), False
    filesystem.create_dir(name)
    return name, props.get("s3.endpoint", "AWS S3"), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.s3", description="Local MinIO (S3) server.")
    parser.add_argument("command", choices=["start", "stop", "status", "fetch", "create-bucket"])
    parser.add_argument("bucket", nargs="?", help="create-bucket: the bucket (default with --spec: its warehouse's)")
    parser.add_argument(
        "--spec",
        help="create-bucket: use this pipeline spec's S3 endpoint and credentials (default: the server `start` runs)",
    )
    args = parser.parse_args(argv)
    if args.command == "create-bucket":
        try:
            if args.spec:
                bucket, where, created = create_bucket_for_spec(args.spec, args.bucket)
            else:
                if not args.bucket:
                    parser.error("create-bucket needs a bucket name (or --spec FILE)")
                server = attach()
                bucket, where = args.bucket, server.endpoint
                created = server.filesystem().get_file_info(bucket).type.name == "NotFound"
                server.create_bucket(bucket)
        except (S3SetupError, OSError, ValueError) as e:
            print(f"python -m infra.s3 create-bucket: {e}", file=sys.stderr)
            return 2
        print(f"bucket {bucket!r} {'created' if created else 'already exists'} at {where}")
        return 0
    if args.command == "fetch":
        started = time.monotonic()
        path = fetch()
        print(f"{path} ({path.stat().st_size / 1e6:.0f} MB) ready in {time.monotonic() - started:.1f}s")
        return 0
    if args.command == "start":
        try:
            server = attach()
            print(f"already running: {server.endpoint} (pid {server.pid})")
            return 0
        except S3SetupError:
            pass
        state_file = _state_path()
        if state_file.exists():  # stopped earlier: reuse port/data/credentials so data persists
            server = S3Server.from_state(json.loads(state_file.read_text()))
            server.binary = fetch()
            if port_open(server.port):
                server.port = free_port()
            server._spawn(60.0)
        else:
            server = start(data_dir=run_dir("s3", "cli") / "data")
        _write_state(server)
        print(f"MinIO running: {server.endpoint} (pid {server.pid}); credentials in {state_file} (mode 600)")
        return 0
    if args.command == "stop":
        try:
            server = attach()
        except S3SetupError as e:
            print(e)
            return 0
        server.stop()
        state = json.loads(_state_path().read_text())
        state["pid"] = None
        _write_state(S3Server.from_state(state))
        print(f"stopped MinIO on {server.endpoint}")
        return 0
    try:  # status
        server = attach()
    except S3SetupError as e:
        print(f"not running: {e}")
        return 1
    print(
        f"{'ready' if server.ready() else 'starting/unhealthy'}: {server.endpoint} pid {server.pid} "
        f"data {server.data_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
