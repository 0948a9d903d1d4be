"""A real Apache Flink standalone session cluster on 127.0.0.1, plus what Beam's
``FlinkRunner`` needs to run Python pipelines on it.

Pieces and where they come from (all cached; once fetched nothing touches the network):

* Flink itself: the PyPI ``apache-flink`` + ``apache-flink-libraries`` distributions
  (they carry ``pyflink/bin/*.sh``, ``pyflink/lib/*.jar`` and ``pyflink/conf``),
  installed with ``pip --no-deps --target`` under ``cache_dir("flink", FLINK_VERSION)``,
  never into the project's environment (they pin an old apache-beam).
* The Beam Flink job server (``--flink_job_server_jar``): the published shaded
  ``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam version>`` is tried
  first with ``mvn dependency:copy``. The Maven Central reachable here does not carry
  any ``*-job-server`` artifact, so the fallback assembles the same thing from its
  parts: ``mvn dependency:copy-dependencies`` of ``beam-runners-flink-<minor>:<runner
  version>`` (the newest release whose whole dependency tree resolves here) into
  ``libs/`` plus a thin launcher jar whose manifest names
  ``FlinkJobServerDriver`` and a relative ``Class-Path`` over ``libs/``.
* SDK harness: Beam's Python worker pool (``apache_beam.runners.worker.worker_pool_main``)
  started from the *calling* interpreter (the project venv) and used with
  ``--environment_type=EXTERNAL`` (no Docker here, and the ``PROCESS`` environment needs
  the Go ``boot`` binary of Beam's container image, which no package ships).

Python API::

    fetch() -> Path                                   # Flink home (pyflink/), cached
    job_server_jar() -> Path                          # launcher jar for --flink_job_server_jar
    start(slots=2) -> FlinkCluster
    FlinkCluster.rest_url / .master / .jobs() / .job(id) / .cancel(id) / .wait_for_job(id)
    FlinkCluster.beam_options(parallelism=1) -> list[str]   # starts the worker pool on first use
    beam_options(cluster, parallelism=1) -> list[str]
    FlinkCluster.stop()

CLI::

    python -m infra.flink fetch | start [--slots N] | stop | status
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from infra.service import ManagedProcess, cache_dir, free_port, port_open, run_dir

# the versions, the job server's place in the cache and the Java lookup are the runner's
# (``obsflow submit`` finds the jar there); this module fetches into that place
from runners.flink_job_server import (
    COMPLETE as _COMPLETE,
    FLINK_MINOR,
    FLINK_VERSION,
    FlinkSetupError,
    beam_version as _beam_version,
    env_job_server_jar,
    java_home,
    job_server_dir,
)

BEAM_RUNNER_VERSION = os.environ.get("OBSFLOW_BEAM_FLINK_RUNNER_VERSION", "2.62.0")
SLF4J_VERSION = "1.7.30"  # the binding the published job server ships (slf4j-jdk14)
DEPENDENCY_PLUGIN = "3.8.1"


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (concurrent fetches wait for one another)."""
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _java() -> str:
    return str(java_home() / "bin" / "java")


# --------------------------------------------------------------------------- fetch


def flink_home(version: str = FLINK_VERSION) -> Path:
    """The Flink distribution directory (``pyflink/`` inside the cached pip target)."""
    return cache_dir("flink", version) / "dist" / "pyflink"


def fetch(version: str = FLINK_VERSION) -> Path:
    """Install the ``apache-flink`` wheels (``--no-deps``) into the cache; return the Flink home.

    Uses ``pip`` of the running interpreter with ``--target``, so the project's
    environment is never touched. Idempotent and safe to call concurrently.
    """
    root = cache_dir("flink", version)
    home = flink_home(version)
    if (root / _COMPLETE).exists():
        return home
    with _locked(root):
        if (root / _COMPLETE).exists():
            return home
        target = root / "dist"
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            f"apache-flink=={version}",
            f"apache-flink-libraries=={version}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as e:  # pragma: no cover - sys.executable always exists
            raise FlinkSetupError(f"cannot run pip: {e}") from e
        if proc.returncode != 0 or not (home / "bin" / "jobmanager.sh").exists():
            raise FlinkSetupError(
                f"installing apache-flink=={version} from PyPI failed (exit {proc.returncode}): "
                f"{' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            )
        for script in (home / "bin").iterdir():
            script.chmod(0o755)
        info = {"seconds": round(time.monotonic() - t0, 1), "bytes": _du(target)}
        (root / "fetch.json").write_text(json.dumps(info))
        (root / _COMPLETE).write_text(FLINK_VERSION)
    return home


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise FlinkSetupError("`mvn` not found: install Maven (`apt-get install maven`) to fetch the Beam job server.")
    return mvn


def _mvn_env() -> dict[str, str]:
    return {**os.environ, "JAVA_HOME": str(java_home())}


def _try_published_job_server(dest: Path, beam_version: str) -> Path | None:
    """The published shaded job server jar, or ``None`` if Maven cannot resolve it."""
    coords = f"org.apache.beam:beam-runners-flink-{FLINK_MINOR}-job-server:{beam_version}"
    proc = subprocess.run(
        [
            _mvn(),
            "-B",
            "-q",
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={coords}",
            f"-DoutputDirectory={dest}",
        ],
        capture_output=True,
        text=True,
        env=_mvn_env(),
        cwd=dest,
    )
    jar = dest / f"beam-runners-flink-{FLINK_MINOR}-job-server-{beam_version}.jar"
    return jar if proc.returncode == 0 and jar.exists() else None


def _runner_pom(runner_version: str) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>obsflow.local</groupId>
  <artifactId>beam-flink-job-server-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-{FLINK_MINOR}</artifactId>
      <version>{runner_version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-jdk14</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def _manifest_line(text: str) -> bytes:
    """One JAR manifest header, wrapped at 72 bytes with continuation lines."""
    raw = text.encode()
    out = [raw[:72]]
    raw = raw[72:]
    while raw:
        out.append(b" " + raw[:71])
        raw = raw[71:]
    return b"\r\n".join(out)


def _assemble_job_server(dest: Path, runner_version: str) -> Path:
    """``libs/`` of ``beam-runners-flink-<minor>`` + a launcher jar naming them; return the jar."""
    (dest / "pom.xml").write_text(_runner_pom(runner_version))
    libs = dest / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    proc = subprocess.run(
        [
            _mvn(),
            "-B",
            "-q",
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        env=_mvn_env(),
        cwd=dest,
    )
    if proc.returncode != 0 or not libs.is_dir():
        raise FlinkSetupError(
            f"resolving org.apache.beam:beam-runners-flink-{FLINK_MINOR}:{runner_version} from Maven Central failed "
            f"(exit {proc.returncode}); is Maven Central reachable?\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        )
    class_path = " ".join(f"libs/{p.name}" for p in sorted(libs.glob("*.jar")))
    manifest = b"\r\n".join(
        [
            b"Manifest-Version: 1.0",
            _manifest_line("Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver"),
            _manifest_line(f"Class-Path: {class_path}"),
            b"",
            b"",
        ]
    )
    jar = dest / f"beam-runners-flink-{FLINK_MINOR}-job-server-{runner_version}-launcher.jar"
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", manifest)
    return jar


def job_server_jar(beam_version: str | None = None) -> Path:
    """Path for ``--flink_job_server_jar`` (fetched and cached on first use).

    ``$OBSFLOW_FLINK_JOB_SERVER_JAR`` wins if set. Otherwise the published
    ``beam-runners-flink-<minor>-job-server:<beam version>`` if Maven resolves it, else a
    launcher jar over ``beam-runners-flink-<minor>:BEAM_RUNNER_VERSION`` and its dependencies.
    """
    given = env_job_server_jar()
    if given is not None:
        return given
    beam_version = beam_version or _beam_version()
    root = job_server_dir(beam_version)
    root.mkdir(parents=True, exist_ok=True)
    done = root / _COMPLETE
    if done.exists():
        return root / done.read_text().strip()
    with _locked(root):
        if done.exists():
            return root / done.read_text().strip()
        t0 = time.monotonic()
        jar = _try_published_job_server(root, beam_version)
        kind = "published"
        if jar is None:
            jar = _assemble_job_server(root, BEAM_RUNNER_VERSION)
            kind = f"assembled from beam-runners-flink-{FLINK_MINOR}:{BEAM_RUNNER_VERSION}"
        info = {"seconds": round(time.monotonic() - t0, 1), "bytes": _du(root), "kind": kind, "jar": jar.name}
        (root / "fetch.json").write_text(json.dumps(info))
        done.write_text(jar.name)
    return jar


# --------------------------------------------------------------------------- cluster


def _flink_config(home: Path, ports: dict[str, int], slots: int, workdir: Path) -> str:
    """``config.yaml`` (flat keys) for a loopback-only session cluster."""
    java_opts = ""
    try:
        import yaml

        shipped = yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {}
        java_opts = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all", "") or ""
    except Exception:  # noqa: BLE001 - the JVM flags are only needed on Java 17
        pass
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "env.java.opts.all": java_opts,
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": ports["jm_rpc"],
        "jobmanager.memory.process.size": "1g",
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.rpc.port": ports["tm_rpc"],
        "taskmanager.data.port": ports["tm_data"],
        "taskmanager.numberOfTaskSlots": slots,
        "taskmanager.memory.process.size": "1536m",
        "blob.server.port": ports["blob"],
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": ports["rest"],
        "parallelism.default": 1,
        "io.tmp.dirs": str(tmp),
        "web.tmpdir": str(tmp),
        "blob.storage.directory": str(tmp),
        "metrics.internal.query-service.port": "0",
        # The TaskManager starts alongside the JobManager; retry registration quickly
        # instead of the default 10 s back-off after the first refused connection.
        "cluster.registration.error-delay": 500,
        "cluster.registration.initial-timeout": 200,
    }
    return "".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}\n" for k, v in settings.items())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child that nobody reaped yet is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _pid_matches(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line or environment mentions ``marker``."""
    try:
        return _pid_alive(pid) and (
            marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            or marker in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        )
    except OSError:
        return False


def _stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if still there after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: poll instead
                if not _pid_alive(pid):
                    return
            time.sleep(0.2)


@dataclass
class FlinkCluster:
    """A running standalone session cluster (one JobManager, one TaskManager) on 127.0.0.1.

    ``pids`` maps ``jobmanager``/``taskmanager``/``worker_pool`` to process-group leaders
    started in their own sessions; ``stop()`` ends them all.
    """

    rest_port: int
    workdir: Path
    slots: int
    version: str = FLINK_VERSION
    pids: dict[str, int] = field(default_factory=dict)
    worker_pool_port: int | None = None
    python: str = sys.executable
    _procs: dict[str, ManagedProcess] = field(default_factory=dict, repr=False)

    # ---- addresses
    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def master(self) -> str:
        """``host:port`` for ``--flink_master``."""
        return f"127.0.0.1:{self.rest_port}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    # ---- REST (through runners.flink_rest, the project's one Flink REST client)
    def rest(self, path: str, method: str = "GET", timeout: float = 10.0, attempts: int = 3) -> Any:
        """JSON from the REST API, e.g. ``rest("/overview")``; GETs are retried."""
        from runners.flink_rest import FlinkRest

        return FlinkRest(self.rest_url, timeout=timeout).request(method, path, attempts=attempts)

    def overview(self) -> dict:
        return self.rest("/overview")

    def jobs(self) -> list[dict]:
        """``/jobs/overview``: one dict per job (``jid``, ``name``, ``state``, ``duration``, ...)."""
        return self.rest("/jobs/overview")["jobs"]

    def job(self, job_id: str) -> dict:
        return self.rest(f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> None:
        """Ask Flink to cancel a job (returns at once; see ``wait_for_job``)."""
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def wait_for_job(
        self, job_id: str, timeout: float = 120.0, states: tuple[str, ...] = ("FINISHED", "FAILED", "CANCELED")
    ) -> str:
        """Poll until the job reaches one of ``states`` (or another terminal state); return it."""
        from runners.flink_rest import FlinkRest

        return FlinkRest(self.rest_url).wait_for_state(job_id, states, timeout=timeout)

    def ready(self) -> bool:
        """REST answers with one TaskManager and all its slots registered. While starting,
        a refused connection and Flink's 503 (leader election not yet done) mean "not yet"."""
        from runners.flink_rest import FlinkRestError

        try:
            ov = self.rest("/overview", attempts=1)  # polled while starting: no retries here
        except (OSError, ValueError):
            return False
        except FlinkRestError as e:
            if e.status == 503:
                return False
            raise
        return ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= self.slots

    def alive(self) -> bool:
        return all(_pid_alive(self.pids[n]) for n in ("jobmanager", "taskmanager") if n in self.pids)

    # ---- Beam
    def ensure_worker_pool(self) -> int:
        """Start (once) Beam's Python SDK worker pool for ``--environment_type=EXTERNAL``.

        It runs ``self.python`` (the interpreter that started the cluster, i.e. the
        project venv); the pool starts workers with a bare ``python``, so that
        interpreter's directory goes first on its PATH. Returns the pool's port.
        """
        if self.worker_pool_port and _pid_alive(self.pids.get("worker_pool", -1)):
            return self.worker_pool_port
        port = free_port()
        bindir = str(Path(self.python).parent)
        proc = ManagedProcess.spawn(
            "beam-worker-pool",
            [self.python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            self.log_dir / "beam-worker-pool.log",
            env={"PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "OBSFLOW_FLINK_HOME": str(self.workdir)},
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 60
        while not port_open(port):
            if not proc.alive() or time.monotonic() > deadline:
                proc.stop()
                tail = proc.log.read_text(errors="replace")[-2000:] if proc.log.exists() else ""
                raise FlinkSetupError(f"Beam worker pool ({self.python}) did not start on port {port}:\n{tail}")
            time.sleep(0.2)
        self._procs["worker_pool"] = proc
        self.pids["worker_pool"] = proc.popen.pid
        self.worker_pool_port = port
        self._write_state()
        return port

    def beam_options(self, parallelism: int = 1, job_server: Path | None = None) -> list[str]:
        """Pipeline options that run a Beam Python pipeline on this cluster.

        FlinkRunner + the job server jar (started by Beam per pipeline run, with this
        module's Java) + the EXTERNAL worker pool, which is started here on first use.
        """
        pool = self.ensure_worker_pool()
        jar = job_server or job_server_jar()
        return [
            "--runner=FlinkRunner",
            f"--flink_master={self.master}",
            f"--flink_version={FLINK_MINOR}",
            f"--flink_job_server_jar={jar}",
            f"--job_server_java_launcher={_java()}",
            "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{pool}",
            f"--parallelism={parallelism}",
        ]

    # ---- lifecycle
    def stop(self, remove: bool = False) -> None:
        """Stop the worker pool, TaskManager and JobManager; ``remove`` deletes the work dir."""
        for name in ("worker_pool", "taskmanager", "jobmanager"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
            elif name in self.pids and _pid_matches(self.pids[name], str(self.workdir)):
                _stop_group(self.pids[name])
            self.pids.pop(name, None)
        self.worker_pool_port = None
        state = self.workdir / "state.json"
        state.unlink(missing_ok=True)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_state(self) -> None:
        state = {
            "rest_port": self.rest_port,
            "workdir": str(self.workdir),
            "slots": self.slots,
            "version": self.version,
            "pids": self.pids,
            "worker_pool_port": self.worker_pool_port,
            "python": self.python,
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, path: Path) -> FlinkCluster:
        """Re-attach to a cluster started elsewhere (e.g. by ``python -m infra.flink start``)."""
        s = json.loads(path.read_text())
        return cls(
            rest_port=s["rest_port"],
            workdir=Path(s["workdir"]),
            slots=s["slots"],
            version=s["version"],
            pids={k: int(v) for k, v in s["pids"].items()},
            worker_pool_port=s.get("worker_pool_port"),
            python=s.get("python", sys.executable),
        )


def start(
    slots: int = 2, *, workdir: Path | None = None, timeout: float = 180.0, python: str | None = None
) -> FlinkCluster:
    """Fetch (if needed) and start a session cluster; return once REST shows 1 TaskManager
    with ``slots`` slots. Every port is a free 127.0.0.1 port; config, logs and temp files
    live in ``workdir`` (default: a new directory under ``run_dir("flink")``)."""
    home = fetch()
    java = java_home()
    workdir = workdir or run_dir("flink", f"cluster-{uuid.uuid4().hex[:8]}")
    conf, log = workdir / "conf", workdir / "log"
    conf.mkdir(parents=True, exist_ok=True)
    log.mkdir(parents=True, exist_ok=True)
    for f in (home / "conf").glob("log4j*.properties"):
        shutil.copy(f, conf / f.name)
    ports = {k: free_port() for k in ("rest", "jm_rpc", "blob", "tm_rpc", "tm_data")}
    (conf / "config.yaml").write_text(_flink_config(home, ports, slots, workdir))
    env = {
        "FLINK_CONF_DIR": str(conf),
        "FLINK_LOG_DIR": str(log),
        "JAVA_HOME": str(java),
        "PATH": f"{java / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLINK_IDENT_STRING": "obsflow",
        "OBSFLOW_FLINK_HOME": str(workdir),
    }
    env.pop("FLINK_ENV_JAVA_OPTS", None)
    cluster = FlinkCluster(rest_port=ports["rest"], workdir=workdir, slots=slots, python=python or sys.executable)
    for name, script in (("jobmanager", "jobmanager.sh"), ("taskmanager", "taskmanager.sh")):
        proc = ManagedProcess.spawn(
            f"flink-{name}",
            ["bash", str(home / "bin" / script), "start-foreground"],
            log / f"{name}.out",
            env=env,
            cwd=workdir,
        )
        cluster._procs[name] = proc
        cluster.pids[name] = proc.popen.pid
    cluster._write_state()
    deadline = time.monotonic() + timeout
    while not cluster.ready():
        dead = [n for n, p in cluster._procs.items() if not p.alive()]
        if dead or time.monotonic() > deadline:
            what = f"{', '.join(dead)} exited" if dead else f"not ready within {timeout:.0f}s"
            tails = "".join(
                f"\n--- {p.log} ---\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-30:])
                for p in cluster._procs.values()
                if p.log.exists()
            )
            cluster.stop()
            raise FlinkSetupError(f"Flink {FLINK_VERSION} cluster in {workdir}: {what}{tails}")
        time.sleep(0.3)
    return cluster


def beam_options(cluster: FlinkCluster, parallelism: int = 1) -> list[str]:
    """Beam pipeline options for ``cluster`` (starts its worker pool on first use)."""
    return cluster.beam_options(parallelism=parallelism)


# --------------------------------------------------------------------------- CLI


def _cli_dir() -> Path:
    return run_dir("flink", "cli")


def _cli_cluster() -> FlinkCluster | None:
    state = _cli_dir() / "state.json"
    if not state.exists():
        return None
    cluster = FlinkCluster.from_state(state)
    return cluster if _pid_matches(cluster.pids.get("jobmanager", -1), str(cluster.workdir)) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.flink", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download Flink and the Beam job server into the cache")
    p_start = sub.add_parser("start", help="start a detached session cluster (+ Beam worker pool)")
    p_start.add_argument("--slots", type=int, default=2)
    sub.add_parser("stop", help="stop the cluster started by `start`")
    sub.add_parser("status", help="print the running cluster's REST overview and jobs")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            t0 = time.monotonic()
            print(f"flink {FLINK_VERSION}: {fetch()}")
            print(f"job server: {job_server_jar()}")
            print(f"java: {java_home()}  ({time.monotonic() - t0:.1f}s)")
            return 0
        if args.cmd == "start":
            running = _cli_cluster()
            if running:
                print(running.rest_url)
                print("already running", file=sys.stderr)
                return 0
            workdir = _cli_dir()
            for stale in ("conf", "log", "tmp"):
                shutil.rmtree(workdir / stale, ignore_errors=True)
            t0 = time.monotonic()
            started = start(args.slots, workdir=workdir)
            started.ensure_worker_pool()
            job_server_jar()
            print(started.rest_url)
            print(f"started in {time.monotonic() - t0:.1f}s; Beam options:", file=sys.stderr)
            print(" ".join(started.beam_options()), file=sys.stderr)
            return 0
        cluster = _cli_cluster()
        if args.cmd == "stop":
            if cluster is None:
                print("not running")
                return 0
            cluster.stop()
            print("stopped")
            return 0
        if cluster is None:  # status
            print("not running")
            return 1
        print(
            json.dumps(
                {
                    "rest_url": cluster.rest_url,
                    "master": cluster.master,
                    "workdir": str(cluster.workdir),
                    "pids": cluster.pids,
                    "worker_pool_port": cluster.worker_pool_port,
                    "overview": cluster.overview(),
                    "jobs": cluster.jobs(),
                },
                indent=2,
            )
        )
        return 0
    except FlinkSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
