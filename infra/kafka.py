"""A real Apache Kafka broker (KRaft, single combined broker+controller node) on 127.0.0.1.

The broker jars and all their runtime dependencies come from Maven Central through
``mvn`` and are cached under ``infra.service.cache_dir("kafka", version)``; once
cached, nothing here touches the network. Brokers run from a directory under
``infra.service.run_dir("kafka")`` holding their config, data and log.

Python API::

    fetch(version=KAFKA_VERSION) -> Path                   # jars dir, cached
    start(partitions=4, *, version=..., name=None, ...) -> KafkaBroker
    KafkaBroker.bootstrap / stop() / kill() / restart() / create_topic(...)
    KafkaEndpoint(bootstrap)                               # an existing broker

CLI::

    python -m infra.kafka fetch | start [--fresh] | stop | status
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from core.errors import ObsflowError
from infra.service import ManagedProcess, cache_dir, free_port, port_open, run_dir

# 4.4.0 is on Central but its runtime dependency kafka-tools-api:4.4.0 is not, so the
# newest 4.x whose full dependency set resolves is the default. Override with
# OBSFLOW_KAFKA_VERSION (LOG4J_VERSION must then match that release's log4j-core).
KAFKA_VERSION = os.environ.get("OBSFLOW_KAFKA_VERSION", "4.3.1")
LOG4J_VERSION = os.environ.get("OBSFLOW_KAFKA_LOG4J_VERSION", "2.25.4")
DEPENDENCY_PLUGIN = "3.8.1"
DEFAULT_HEAP = os.environ.get("OBSFLOW_KAFKA_HEAP", "512m")
MIN_JAVA = 17
_COMPLETE = ".complete"


class KafkaSetupError(ObsflowError, RuntimeError):
    """Java, Maven or the jar download is missing or broken; the message says what to do."""


# --------------------------------------------------------------------------- fetch


@functools.cache
def _java_info() -> tuple[str, str]:
    """``(path, version banner)`` of a ``java`` >= 17: ``$JAVA_HOME/bin/java`` first, then ``PATH``.

    Raises ``KafkaSetupError`` saying what to install if there is none.
    """
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    candidates.append(shutil.which("java") or "")
    for java in candidates:
        if java and os.access(java, os.X_OK):
            out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
            m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
            major = int(m.group(1)) if m else 0
            if major == 1 and m and m.group(2):  # "1.8" style
                major = int(m.group(2))
            if major >= MIN_JAVA:
                return os.path.realpath(java), out
            raise KafkaSetupError(
                f"{java} is Java {major or '?'}; Kafka 4 needs Java {MIN_JAVA}+. "
                "Install a JDK 17+ (e.g. `apt-get install openjdk-17-jre-headless`) or point JAVA_HOME at one."
            )
    raise KafkaSetupError(
        f"no `java` found (JAVA_HOME unset/invalid and none on PATH). Kafka 4 needs Java {MIN_JAVA}+: "
        "install one (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
    )


def _java() -> str:
    return _java_info()[0]


def _cds_archive(version: str) -> Path:
    """Path of the AppCDS archive of the broker's classes for this JVM build (may not exist yet).

    Loading classes from it roughly halves JVM start time on a busy 2-core machine.
    """
    path, banner = _java_info()
    tag = hashlib.sha1(f"{path}\n{banner}".encode()).hexdigest()[:12]
    return cache_dir("kafka", version) / f"cds-{tag}.jsa"


def _pom(version: str) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>obsflow.local</groupId>
  <artifactId>kafka-broker-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <!-- Kafka logs through slf4j 1.7; this binds it to the log4j2 that Kafka ships. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` live (exists and is complete only after ``fetch``)."""
    return cache_dir("kafka", version) / "libs"


def is_fetched(version: str = KAFKA_VERSION) -> bool:
    """True when every jar listed at fetch time is present; no network involved."""
    marker = libs_dir(version) / _COMPLETE
    if not marker.exists():
        return False
    names = marker.read_text().split()
    return bool(names) and all((libs_dir(version) / n).exists() for n in names)


def fetch(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Ensure the broker jars for ``version`` (``kafka_2.13`` + all runtime deps) are cached.

    Returns the directory holding the jars. If they are already cached this returns
    at once without running ``mvn`` or touching the network. Concurrent callers are
    serialised with a file lock; a half-finished download is never seen as complete.
    Raises ``KafkaSetupError`` if ``mvn`` is missing or the download fails.
    """
    if is_fetched(version):
        return libs_dir(version)
    root = cache_dir("kafka", version)
    with open(root / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_fetched(version):
            return libs_dir(version)
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaSetupError(
                "`mvn` not found on PATH; it downloads the Kafka broker jars from Maven Central. "
                "Install Maven (e.g. `apt-get install maven`) and retry `python -m infra.kafka fetch`."
            )
        (root / "pom.xml").write_text(_pom(version))
        tmp = root / "libs.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(root / "pom.xml"),
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        if quiet:
            argv.insert(2, "-q")
        proc = subprocess.run(argv, cwd=root, capture_output=True, text=True)
        jars = sorted(p.name for p in tmp.glob("*.jar")) if tmp.exists() else []
        if proc.returncode != 0 or not any(j.startswith(f"kafka_2.13-{version}") for j in jars):
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise KafkaSetupError(
                f"fetching org.apache.kafka:kafka_2.13:{version} with mvn failed (exit {proc.returncode}). "
                "It needs access to Maven Central (https://repo.maven.apache.org; configure a mirror or "
                "proxy in ~/.m2/settings.xml if needed) and a release whose dependencies are all "
                f"published (set OBSFLOW_KAFKA_VERSION to another 4.x if not).\n--- mvn output ---\n{tail}"
            )
        (tmp / _COMPLETE).write_text("\n".join(jars) + "\n")
        dest = libs_dir(version)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest


# --------------------------------------------------------------------------- clients


def _quiet_logger():
    import logging

    log = logging.getLogger("obsflow.infra.kafka.librdkafka")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


@dataclass
class KafkaEndpoint:
    """A reachable Kafka cluster known by its bootstrap address; topic helpers only."""

    bootstrap: str

    def admin(self, **conf: Any):
        """A ``confluent_kafka.admin.AdminClient`` for this cluster."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "logger": _quiet_logger(), **conf})

    def ping(self, timeout: float = 2.0) -> bool:
        """True if the cluster answers a metadata request with at least one broker."""
        md = self.admin().list_topics(timeout=timeout)
        return bool(md.brokers)

    def topics(self, timeout: float = 10.0) -> set[str]:
        """Names of existing topics (internal ones included)."""
        return set(self.admin().list_topics(timeout=timeout).topics)

    def create_topic(
        self, name: str, partitions: int = 4, config: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> str:
        """Create topic ``name`` (replication factor 1) and return ``name``.

        Returns only once metadata shows all ``partitions`` partitions with a leader,
        so producing and consuming can start right away. Raises
        ``confluent_kafka.KafkaException`` if the topic exists or creation fails.
        """
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        fut = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
            operation_timeout=timeout,
            request_timeout=timeout,
        )[name]
        fut.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            md = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                md is not None
                and md.error is None
                and len(md.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in md.partitions.values())
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name!r} created but not ready within {timeout:.0f}s")
            time.sleep(0.1)

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        """Delete topic ``name``; raises ``confluent_kafka.KafkaException`` on failure."""
        admin = self.admin()  # must outlive the future
        admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)


# --------------------------------------------------------------------------- broker


def _cluster_id() -> str:
    """A KRaft cluster id (URL-safe base64 of 16 random bytes, never starting with '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _server_properties(port: int, controller_port: int, data: Path, partitions: int, extra: Mapping[str, Any]) -> str:
    props: dict[str, Any] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": partitions,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        # After a SIGKILL the old registration blocks the restarted broker until this
        # session expires (default 9s); keep it short but well above the heartbeat.
        "broker.session.timeout.ms": 4000,
        "broker.heartbeat.interval.ms": 500,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 2,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "delete.topic.enable": "true",
    }
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass
class KafkaBroker(KafkaEndpoint):
    """A local single-node KRaft broker started by ``start()``.

    ``port``/``controller_port`` and ``home`` (config, ``data/``, ``broker.log``) stay
    fixed for the handle's life, so ``restart()`` brings the broker back at the same
    ``bootstrap`` with the same data.
    """

    port: int = 0
    controller_port: int = 0
    home: Path = Path()
    version: str = KAFKA_VERSION
    heap: str = DEFAULT_HEAP
    start_timeout: float = 120.0
    process: ManagedProcess | None = field(default=None, repr=False)
    _cds_pending: Path | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.home / "broker.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid(self) -> int | None:
        return self.process.popen.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def rss_bytes(self) -> int:
        """Resident memory of the broker JVM (0 if not running)."""
        if not self.alive():
            return 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _java_argv(self, main: str, *args: str, cds: list[str] | None = None) -> list[str]:
        return [
            _java(),
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-Xss512k",
            "-XX:MaxMetaspaceSize=256m",
            "-XX:ReservedCodeCacheSize=64m",
            "-XX:MaxDirectMemorySize=256m",
            *(cds or []),
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            str(libs_dir(self.version) / "*"),
            main,
            *args,
        ]

    def _cds_read_flags(self) -> list[str]:
        """Flags to use the class-data archive if one exists (no archive is written)."""
        archive = _cds_archive(self.version)
        return (
            ["-XX:TieredStopAtLevel=1", f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off"]
            if archive.exists()
            else ["-XX:TieredStopAtLevel=1"]
        )

    def _cds_flags(self) -> list[str]:
        """Use the class-data archive if there is one, else have this JVM write one at clean exit."""
        archive = _cds_archive(self.version)
        if archive.exists():
            self._cds_pending = None
            return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        for stale in archive.parent.glob(f"{archive.name}.*.tmp"):  # left by crashed runs
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        self._cds_pending = archive.with_name(f"{archive.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
        return [f"-XX:ArchiveClassesAtExit={self._cds_pending}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]

    def _settle_cds(self, keep: bool) -> None:
        """After the JVM exited: publish (atomically) or discard the archive it was asked to write."""
        tmp, self._cds_pending = self._cds_pending, None
        if tmp is None or not tmp.exists():
            return
        if keep and tmp.stat().st_size > 0 and not _cds_archive(self.version).exists():
            os.replace(tmp, _cds_archive(self.version))
        else:
            tmp.unlink(missing_ok=True)

    def _format(self) -> None:
        """Format the KRaft storage in ``data_dir`` unless already formatted."""
        if (self.data_dir / "meta.properties").exists():
            return
        proc = subprocess.run(
            self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(self.home / "server.properties"),
                cds=self._cds_read_flags(),
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kafka StorageTool format failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def _launch(self) -> None:
        """Start the JVM and return once it serves metadata; raise with the log tail otherwise."""
        if self.alive():
            raise RuntimeError(f"broker at {self.bootstrap} is already running (pid {self.pid})")
        for p in (self.port, self.controller_port):
            if port_open(p):
                raise RuntimeError(
                    f"port {p} on 127.0.0.1 is taken by another process; cannot start the broker at {self.bootstrap}"
                )
        self.process = ManagedProcess.spawn(
            "kafka",
            self._java_argv("kafka.Kafka", str(self.home / "server.properties"), cds=self._cds_flags()),
            self.log,
        )
        self._write_state()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.alive():
                self._settle_cds(keep=False)
                raise RuntimeError(
                    f"Kafka broker exited with code {self.process.popen.returncode} while starting{self._log_tail()}"
                )
            if port_open(self.port):
                try:
                    if self.ping(timeout=2.0):
                        return
                except Exception:
                    pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(
            f"Kafka broker at {self.bootstrap} not serving within {self.start_timeout:.0f}s{self._log_tail()}"
        )

    def _log_tail(self, n: int = 40) -> str:
        if not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").splitlines()[-n:]
        return f"\n--- last lines of {self.log} ---\n" + "\n".join(lines)

    def _write_state(self) -> None:
        (self.home / "broker.json").write_text(
            json.dumps(
                {
                    "bootstrap": self.bootstrap,
                    "port": self.port,
                    "controller_port": self.controller_port,
                    "pid": self.pid,
                    "version": self.version,
                    "heap": self.heap,
                    "home": str(self.home),
                    "cds_pending": str(self._cds_pending) if self._cds_pending else None,
                },
                indent=1,
            )
        )

    def stop(self, timeout: float = 30.0, remove_data: bool = False) -> None:
        """Clean shutdown (SIGTERM, SIGKILL after ``timeout``). Data stays unless ``remove_data``."""
        if self.process is not None:
            self.process.stop(timeout)
            self._settle_cds(keep=self.process.popen.returncode != -signal.SIGKILL)
        if remove_data:
            shutil.rmtree(self.home, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the broker at once (crash simulation); ``restart()`` brings it back."""
        if self.process is not None:
            self.process.kill()
            self._settle_cds(keep=False)

    def restart(self) -> KafkaBroker:
        """Stop the broker if running, then start it again on the same ports and data dir.

        Returns once it serves again (clients reconnect to the unchanged ``bootstrap``).
        """
        if self.alive():
            self.stop()
        self._launch()
        return self


def start(
    partitions: int = 4,
    *,
    version: str = KAFKA_VERSION,
    home: Path | None = None,
    port: int | None = None,
    controller_port: int | None = None,
    heap: str = DEFAULT_HEAP,
    properties: Mapping[str, Any] | None = None,
    start_timeout: float = 120.0,
) -> KafkaBroker:
    """Start a single-node KRaft broker on 127.0.0.1 and return once it serves.

    ``partitions`` is the broker's default for new topics. Fetches the jars first if
    needed (cached afterwards). ``home`` defaults to a fresh directory under
    ``run_dir("kafka")``; an already formatted ``home`` is reused with its data.
    Free ports are picked unless given. ``properties`` override server settings.
    Auto topic creation is off; idempotent producers and transactions work.
    """
    _java_info()  # fail early, saying what to install
    fetch(version)
    if home is None:
        home = run_dir("kafka") / f"broker-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(
        bootstrap="",
        port=port or free_port(),
        controller_port=controller_port or free_port(),
        home=home,
        version=version,
        heap=heap,
        start_timeout=start_timeout,
    )
    while broker.controller_port == broker.port:
        broker.controller_port = free_port()
    broker.bootstrap = f"127.0.0.1:{broker.port}"
    (home / "server.properties").write_text(
        _server_properties(broker.port, broker.controller_port, broker.data_dir, partitions, properties or {})
    )
    (home / "log4j2.properties").write_text(_LOG4J2)
    broker._format()
    broker._launch()
    return broker


# --------------------------------------------------------------------------- CLI


def _cli_home() -> Path:
    return run_dir("kafka") / "cli"


def _cli_state() -> dict | None:
    f = _cli_home() / "broker.json"
    return json.loads(f.read_text()) if f.exists() else None


def _is_our_broker(pid: int, home: str) -> bool:
    """True if ``pid`` is a live Kafka JVM running from ``home`` (guards against pid reuse)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "kafka.Kafka" in cmd and home in cmd


def _cli_start(args: argparse.Namespace) -> int:
    home = _cli_home()
    state = _cli_state()
    if state and _is_our_broker(state["pid"], state["home"]):
        print(state["bootstrap"])
        print(f"already running (pid {state['pid']}){'; --fresh ignored' if args.fresh else ''}", file=sys.stderr)
        return 0
    if args.fresh:
        shutil.rmtree(home, ignore_errors=True)
    t0 = time.monotonic()
    # Reuse the previous ports with the previous data so clients keep their address.
    reuse = state if state and (home / "data" / "meta.properties").exists() else None
    port = reuse["port"] if reuse and not port_open(reuse["port"]) else None
    cport = reuse["controller_port"] if reuse and not port_open(reuse["controller_port"]) else None
    broker = start(args.partitions, home=home, port=port, controller_port=cport, heap=args.heap)
    print(broker.bootstrap)
    print(f"started pid {broker.pid} in {time.monotonic() - t0:.1f}s; home {home}; log {broker.log}", file=sys.stderr)
    return 0


def _cli_stop(_: argparse.Namespace) -> int:
    state = _cli_state()
    if not state or not _is_our_broker(state["pid"], state["home"]):
        print("kafka: not running")
        return 0
    pid = state["pid"]
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _is_our_broker(pid, state["home"]):
        time.sleep(0.2)
    if _is_our_broker(pid, state["home"]):
        os.killpg(pid, signal.SIGKILL)
    elif state.get("cds_pending"):  # clean exit: publish the class-data archive it wrote
        tmp, final = Path(state["cds_pending"]), _cds_archive(state["version"])
        if tmp.exists() and tmp.stat().st_size > 0 and not final.exists():
            os.replace(tmp, final)
    if state.get("cds_pending"):
        Path(state["cds_pending"]).unlink(missing_ok=True)
    print(f"kafka: stopped (pid {pid}, {state['bootstrap']})")
    return 0


def _cli_status(_: argparse.Namespace) -> int:
    state = _cli_state()
    if not state or not _is_our_broker(state["pid"], state["home"]):
        print("kafka: not running")
        return 1
    try:
        serving = KafkaEndpoint(state["bootstrap"]).ping(timeout=5)
    except Exception:
        serving = False
    print(
        f"kafka: {'running' if serving else 'process alive but NOT serving'} at {state['bootstrap']} "
        f"(pid {state['pid']}, version {state['version']}, home {state['home']})"
    )
    return 0 if serving else 2


def _cli_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    cached = is_fetched(args.version)
    path = fetch(args.version)
    size = sum(p.stat().st_size for p in path.glob("*.jar"))
    print(
        f"kafka {args.version}: {'already cached' if cached else 'fetched'} in {time.monotonic() - t0:.1f}s, "
        f"{len(list(path.glob('*.jar')))} jars, {size / 1e6:.1f} MB at {path}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.kafka", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the broker jars into the cache (no broker started)")
    f.add_argument("--version", default=KAFKA_VERSION)
    s = sub.add_parser("start", help="start a detached broker; prints its bootstrap address")
    s.add_argument("--partitions", type=int, default=4)
    s.add_argument("--heap", default=DEFAULT_HEAP)
    s.add_argument("--fresh", action="store_true", help="discard the data of the previous CLI broker")
    sub.add_parser("stop", help="stop the broker started by `start`")
    sub.add_parser("status", help="report whether the CLI broker runs and serves (exit 0 if so)")
    args = ap.parse_args(argv)
    try:
        return {"fetch": _cli_fetch, "start": _cli_start, "stop": _cli_stop, "status": _cli_status}[args.cmd](args)
    except KafkaSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
