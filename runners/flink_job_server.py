"""Where ``obsflow submit`` finds Beam's Flink job server and a Java to launch it, when no
running job server is given (``--job-endpoint``) and no jar either (``--job-server-jar``).

The jar: ``$OBSFLOW_FLINK_JOB_SERVER_JAR`` when set, else the one cached under
``$OBSFLOW_CACHE`` (default ``~/.cache/obsflow``) in
``beam-flink-job-server/flink-<minor>-beam-<beam version>/``, whose ``.complete`` marker
names it. Fetching it (Maven) is the test services' tooling, ``python -m infra.flink fetch``:
``infra.flink`` imports the location from here, so the runner never imports ``infra``.

The Java: one Flink supports (11 or 17): ``$OBSFLOW_FLINK_JAVA_HOME``, ``$JAVA_HOME``,
``java`` on PATH, then ``/usr/lib/jvm/*``."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from core.errors import ObsflowError

# Flink 2.2.x wheels exist on PyPI, but no Beam runner for Flink 2.x resolves from the
# Maven Central reachable here (neither the job-server jars nor beam-runners-flink-2.*
# and their dependencies). beam-runners-flink-1.19:2.62.0 is the newest Beam Flink runner
# whose complete dependency tree resolves, so the cluster is the newest Flink 1.19.
FLINK_VERSION = os.environ.get("OBSFLOW_FLINK_VERSION", "1.19.3")
FLINK_MINOR = ".".join(FLINK_VERSION.split(".")[:2])
SUPPORTED_JAVA = (11, 17)  # what Flink 1.19 supports (Java 21+ is not)
JAR_ENV = "OBSFLOW_FLINK_JOB_SERVER_JAR"
#: the marker file of a complete fetch in a cache directory (it holds the jar's file name)
COMPLETE = ".complete"


class FlinkSetupError(ObsflowError, RuntimeError):
    """Java, pip, Maven or a download is missing or broken; the message says what to do."""


def cache_root() -> Path:
    """Where downloads are kept between runs: ``$OBSFLOW_CACHE`` or ``~/.cache/obsflow``."""
    return Path(os.environ.get("OBSFLOW_CACHE", Path.home() / ".cache" / "obsflow"))


def beam_version() -> str:
    """The installed Apache Beam's version (the job server must match it)."""
    try:
        from importlib.metadata import version

        return version("apache-beam")
    except Exception:  # noqa: BLE001 - no Beam in this interpreter
        return "2.77.0"


def job_server_dir(beam: str | None = None) -> Path:
    """The cache directory of the job server for ``beam`` (default the installed Beam)."""
    return cache_root() / "beam-flink-job-server" / f"flink-{FLINK_MINOR}-beam-{beam or beam_version()}"


def env_job_server_jar() -> Path | None:
    """``$OBSFLOW_FLINK_JOB_SERVER_JAR`` as a path, None when unset; raises
    :class:`FlinkSetupError` when it names no file."""
    if not os.environ.get(JAR_ENV):
        return None
    given = Path(os.environ[JAR_ENV])
    if not given.is_file():
        raise FlinkSetupError(f"{JAR_ENV}={given} is not a file")
    return given


def cached_job_server_jar(beam: str | None = None) -> Path | None:
    """The job server jar: ``$OBSFLOW_FLINK_JOB_SERVER_JAR``, else the cached one of a
    complete fetch; None when neither is there (nothing is fetched here)."""
    given = env_job_server_jar()
    if given is not None:
        return given
    root = job_server_dir(beam)
    done = root / COMPLETE
    if not done.is_file():
        return None
    jar = root / done.read_text().strip()
    return jar if jar.is_file() else None


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return 0
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


@functools.cache
def java_home() -> Path:
    """A JDK Flink 1.19 supports (11 or 17): ``$OBSFLOW_FLINK_JAVA_HOME``, ``$JAVA_HOME``,
    ``java`` on PATH, then ``/usr/lib/jvm/*``. Raises ``FlinkSetupError`` if none fits."""
    candidates: list[Path] = []
    for var in ("OBSFLOW_FLINK_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    candidates += sorted(Path("/usr/lib/jvm").glob("*")) if Path("/usr/lib/jvm").is_dir() else []
    seen: list[str] = []
    for home in candidates:
        java = home / "bin" / "java"
        if not os.access(java, os.X_OK):
            continue
        major = _java_major(str(java))
        seen.append(f"{home} (Java {major or '?'})")
        if major in SUPPORTED_JAVA:
            return home
    raise FlinkSetupError(
        f"Flink {FLINK_VERSION} needs Java {' or '.join(map(str, SUPPORTED_JAVA))}; "
        + (f"found only: {', '.join(seen)}. " if seen else "no java found. ")
        + "Install one (`apt-get install openjdk-17-jre-headless`) or set OBSFLOW_FLINK_JAVA_HOME."
    )
