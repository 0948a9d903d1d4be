"""The OpenTelemetry Collector contrib ``tailsamplingprocessor``, as a differential oracle
for obsflow's tail sampler: a small Go harness (``infra/otelcol/harness``, ``go.mod``
pins every collector module at one release: contrib v0.161.0, core v1.67.0 / v0.161.0)
built from the Go module proxy into the cache (:func:`infra.service.cache_dir`, never
the repository) and driven in-process: OTLP trace batches in on stdin, kept trace ids
out on stdout, no network.

Python API::

    binary = build()                                  # idempotent; first time ~2 min on 2 cores
    kept = run_harness(config_dict, [otlp_request_bytes, ...])   # -> set of hex trace ids

Command line: ``python -m infra.otelcol fetch|build|path``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.errors import ObsflowError
from infra.service import cache_dir

#: the contrib release the harness imports (see harness/go.mod)
COLLECTOR_VERSION = "v0.161.0"
HARNESS_DIR = Path(__file__).parent / "harness"
_SOURCES = ("go.mod", "go.sum", "main.go")


class OtelcolSetupError(ObsflowError, RuntimeError):
    """The harness could not be fetched, built or run; the message says what to do."""


def _go_binary() -> str:
    for c in (os.environ.get("OBSFLOW_GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise OtelcolSetupError(
        "the Go toolchain (>= 1.26, as harness/go.mod says) is needed to build the Collector harness: "
        "install Go and put `go` on PATH, or set OBSFLOW_GO to its path"
    )


def _go_env() -> dict[str, str]:
    gopath = cache_dir("go")
    return {
        **os.environ,
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(cache_dir("go", "build-cache")),
        "GOFLAGS": "-modcacherw -mod=readonly",
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
    }


def _source_hash() -> str:
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode() + b"\0" + (HARNESS_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def binary_path() -> Path:
    """Where the harness built from the current sources lives (it may not exist yet);
    ``$OBSFLOW_OTELCOL_HARNESS`` overrides."""
    override = os.environ.get("OBSFLOW_OTELCOL_HARNESS")
    if override:
        return Path(override)
    return cache_dir("otelcol", f"{COLLECTOR_VERSION}-{_source_hash()}") / "harness"


def _go(args: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as fh:
        rc = subprocess.call(
            [_go_binary(), *args],
            cwd=HARNESS_DIR,
            env=_go_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise OtelcolSetupError(
            f"`go {' '.join(args)}` ({what}) failed (exit {rc}); it needs the Go module proxy reachable. "
            f"Last lines of {log}:\n{tail}"
        )


def fetch(quiet: bool = False) -> None:
    """Download every module the harness needs (``go mod download``) into the cache."""
    log = cache_dir("otelcol") / "fetch.log"
    if not quiet:
        print(f"downloading the Collector {COLLECTOR_VERSION} modules (log: {log})", file=sys.stderr)
    _go(["mod", "download"], log, "download")


def build(quiet: bool = False) -> Path:
    """Build the harness if the cache has no build of the current sources; return its path.
    Safe from concurrent processes (a file lock) and atomic (a half-built file is never used)."""
    target = binary_path()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if os.environ.get("OBSFLOW_OTELCOL_HARNESS"):
        raise OtelcolSetupError(f"OBSFLOW_OTELCOL_HARNESS points to {target}, which is not an executable file")
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        log = target.parent / "build.log"
        started = time.monotonic()
        fetch(quiet)
        if not quiet:
            print(
                f"building the Collector {COLLECTOR_VERSION} tail sampling harness (first time only; log: {log})",
                file=sys.stderr,
            )
        staging = target.parent / f".harness-{os.getpid()}"
        _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(staging), "."], log, "build")
        os.replace(staging, target)
        if not quiet:
            print(f"built {target} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return target


def frames(messages: list[bytes]) -> bytes:
    """The harness's stdin: each message as a 4-byte big-endian length and its bytes."""
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


def run_harness(config: dict, messages: list[bytes], timeout_s: float = 300.0) -> set[str]:
    """Give ``messages`` (serialized ExportTraceServiceRequest) in order to a fresh
    ``tailsamplingprocessor`` configured with ``config`` (its ``tail_sampling`` keys),
    shut it down (which decides every pending trace) and return the kept trace ids (hex)."""
    binary = build(quiet=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(config, fh)
        cfg_path = fh.name
    try:
        proc = subprocess.run(
            [str(binary), "-config", cfg_path],
            input=frames(messages),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    finally:
        os.unlink(cfg_path)
    if proc.returncode != 0:
        raise OtelcolSetupError(
            f"the Collector harness failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return set(proc.stdout.decode().split())
