"""Shared helpers for the local service scripts: cache and run directories, free ports,
readiness waits and a managed child process that is stopped with its whole group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Directory for downloads kept between runs: ``$OBSFLOW_CACHE`` or ``~/.cache/obsflow``.

    Never inside the repository, so nothing downloaded is ever committed.
    """
    root = Path(os.environ.get("OBSFLOW_CACHE", Path.home() / ".cache" / "obsflow"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(*parts: str) -> Path:
    """Directory for a running service's data and logs: ``$OBSFLOW_RUN`` or ``/tmp/obsflow-run``."""
    root = Path(os.environ.get("OBSFLOW_RUN", "/tmp/obsflow-run"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(check, timeout: float, what: str, log: Path | None = None, interval: float = 0.2) -> None:
    """Poll ``check()`` until it returns true; raise ``TimeoutError`` naming ``what`` and the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # a service that is still starting may refuse or reset
            pass
        time.sleep(interval)
    tail = ""
    if log is not None and log.exists():
        last = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        tail = f"\n--- last lines of {log} ---\n{last}"
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s{tail}")


@dataclass
class ManagedProcess:
    """A child process started in its own process group; ``stop()`` ends the whole group."""

    name: str
    popen: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    @classmethod
    def spawn(
        cls, name: str, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "ab")
        popen = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        fh.close()
        return cls(name, popen, log)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        """SIGKILL the group at once (crash simulation)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(5)


@dataclass
class LocalHttpServer:
    """A server process on 127.0.0.1 that answers ``GET /-/ready`` (Prometheus, Alertmanager):
    its process, port and data directory. :meth:`launch` spawns it and returns only once it is
    ready (else stops it, keeps its directory for the log, and raises ``TimeoutError``)."""

    process: ManagedProcess
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:  # not listening yet (URLError and HTTPError are OSErrors)
            return False

    def stop(self, remove_data: bool = True) -> None:
        self.process.stop()
        if remove_data:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def launch(cls, name: str, argv: list[str], port: int, directory: Path, timeout: float):
        """Spawn ``argv`` (logging to ``directory/<name>.log``) and wait until it is ready."""
        proc = ManagedProcess.spawn(name, argv, directory / f"{name}.log")
        server = cls(proc, port, directory)
        try:
            wait_until(lambda: proc.alive() and server.ready(), timeout, name, log=proc.log)
        except Exception:
            server.stop(remove_data=False)
            raise
        return server
