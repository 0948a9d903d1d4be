"""A real PostgreSQL server for tests and local use (the Iceberg SQL/JDBC catalog).

Uses the machine's PostgreSQL server binaries (Debian package ``postgresql``; found via
``$OBSFLOW_PG_BIN``, ``initdb`` on PATH or ``/usr/lib/postgresql/<v>/bin``). Each
:func:`start` creates a cluster with ``initdb`` under :func:`infra.service.run_dir`,
listens on 127.0.0.1 only (no Unix socket), and creates a password-authenticated user
and database with random credentials. ``initdb``/``postgres`` refuse to run as root, so
as root they run as the unprivileged ``postgres`` account that the package creates.

Command line: ``python -m infra.postgres start|stop|status|install``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from core.errors import ObsflowError
from infra.service import ManagedProcess, free_port, port_open, run_dir, wait_until

INSTALL_HINT = (
    "install the server with `apt-get install -y postgresql` (or run `python -m infra.postgres install` as root)"
)
ADMIN_USER = "postgres"
APP_USER = "obsflow"
APP_DATABASE = "obsflow"
STATE_FILE = "state.json"


class PostgresSetupError(ObsflowError, RuntimeError):
    """PostgreSQL is missing or failed to start; the message says what to install or run."""


# --------------------------------------------------------------------------- binaries


def find_bin_dir() -> Path:
    """Directory holding ``initdb`` and ``postgres``; raises :class:`PostgresSetupError` naming the install."""
    candidates: list[Path] = []
    if os.environ.get("OBSFLOW_PG_BIN"):
        candidates.append(Path(os.environ["OBSFLOW_PG_BIN"]))
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name), reverse=True
    )
    candidates.extend(versions)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "postgres").is_file():
            return c
    raise PostgresSetupError(f"PostgreSQL server binaries (initdb, postgres) not found: {INSTALL_HINT}")


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def install() -> None:
    """``apt-get update`` + ``apt-get install -y postgresql`` (root only); no-op if already installed."""
    try:
        find_bin_dir()
        return
    except PostgresSetupError:
        pass
    if os.geteuid() != 0:
        raise PostgresSetupError("installing PostgreSQL needs root: run `sudo apt-get install -y postgresql`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], check=True, env=env)
    find_bin_dir()


def _service_account() -> pwd.struct_passwd | None:
    """The account to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(os.environ.get("OBSFLOW_PG_USER", "postgres"))
    except KeyError:
        raise PostgresSetupError(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` "
            f"account to run it as: {INSTALL_HINT} (the package creates the account), or run as a normal user"
        ) from None


def _as_account(account: pwd.struct_passwd | None, argv: list[str]) -> tuple[list[str], dict]:
    """The command and ``subprocess`` keywords that run ``argv`` as ``account`` (as they
    are for None). Through ``setpriv`` (util-linux) when it is there rather than with
    ``Popen(user=...)``: to change user in the child, CPython forks instead of vforking,
    and the fork runs the parent's fork handlers in the child — gRPC's (loaded by Beam in a
    test process) can hang it before it ever execs PostgreSQL."""
    if account is None:
        return argv, {}
    env = {**os.environ, "HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name}
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", "--", *argv], {
            "env": env
        }
    return argv, {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "env": env}


def _chown_tree(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is None:
        return
    os.chown(path, account.pw_uid, account.pw_gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), account.pw_uid, account.pw_gid, follow_symlinks=False)


def _check_traversable(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is None:
        return
    for parent in path.resolve().parents:
        st = parent.stat()
        if not (st.st_mode & 0o001) and st.st_uid != account.pw_uid:
            raise PostgresSetupError(
                f"{parent} is not searchable by the `{account.pw_name}` account that runs PostgreSQL; "
                "set OBSFLOW_RUN to a directory under /tmp"
            )


# --------------------------------------------------------------------------- server handle


@dataclass
class PostgresServer:
    """A running PostgreSQL on 127.0.0.1 with a password user owning :attr:`database`."""

    port: int
    user: str
    password: str = field(repr=False)
    database: str
    data_dir: Path
    log: Path
    admin_user: str = ADMIN_USER
    admin_password: str = field(default="", repr=False)
    durable: bool = False
    host: str = "127.0.0.1"
    _process: ManagedProcess | None = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)

    # ---- URLs

    def sqlalchemy_url_for(self, database: str) -> str:
        """``postgresql+psycopg2://user:password@127.0.0.1:PORT/database``."""
        return (
            f"postgresql+psycopg2://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    def jdbc_url_for(self, database: str) -> str:
        """``jdbc:postgresql://127.0.0.1:PORT/database`` (user/password passed separately)."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{database}"

    @property
    def sqlalchemy_url(self) -> str:
        return self.sqlalchemy_url_for(self.database)

    @property
    def jdbc_url(self) -> str:
        return self.jdbc_url_for(self.database)

    @property
    def pid(self) -> int | None:
        return self._process.popen.pid if self._process else self._pid

    # ---- connections

    def connect(self, database: str | None = None, admin: bool = False):
        """A new psycopg2 connection over TCP with password authentication."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=database or self.database,
            connect_timeout=5,
            user=self.admin_user if admin else self.user,
            password=self.admin_password if admin else self.password,
        )

    def create_database(self, name: str) -> None:
        """Create database ``name`` owned by :attr:`user`; raises if it exists already."""
        from psycopg2 import sql

        conn = self.connect("postgres", admin=True)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user))
                )
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        from psycopg2 import sql

        conn = self.connect("postgres", admin=True)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()

    # ---- lifecycle

    def _spawn(self, timeout: float) -> None:
        bin_dir = find_bin_dir()
        account = _service_account()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "shared_buffers": "32MB",
            "max_connections": "100",
        }
        if not self.durable:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        argv, as_account = _as_account(account, argv)
        fh = open(self.log, "ab")
        try:
            popen = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
                **as_account,
            )
        finally:
            fh.close()
        process = self._process = ManagedProcess("postgres", popen, self.log)
        self._pid = popen.pid

        def ready() -> bool:
            if not process.alive():
                raise PostgresSetupError(f"postgres exited while starting; see {self.log}:\n{_tail(self.log)}")
            conn = self.connect("postgres", admin=True)
            conn.close()
            return True

        try:
            wait_until(ready, timeout, f"PostgreSQL on 127.0.0.1:{self.port}", log=self.log)
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.alive()
        return self._pid is not None and _pid_alive(self._pid)

    def stop(self, remove_data: bool = False, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: disconnects clients, checkpoints); SIGKILL after ``timeout``.

        ``remove_data`` deletes the cluster directory afterwards.
        """
        if self._process is not None:
            popen = self._process.popen
            if popen.poll() is None:
                try:
                    os.kill(popen.pid, signal.SIGINT)
                    popen.wait(timeout)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    self._process.kill()
        elif self._pid is not None:
            _stop_pid(self._pid, timeout)
        if remove_data:  # a default cluster owns its parent dir pg-<id> (data + log)
            owned = self.data_dir.parent.name.startswith("pg-")
            shutil.rmtree(self.data_dir.parent if owned else self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server's process group at once (crash simulation)."""
        if self._process is not None:
            self._process.kill()
        elif self._pid is not None:
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start(self, timeout: float = 60.0) -> None:
        """Start a stopped server again on the same port and cluster."""
        if self.alive():
            raise PostgresSetupError(f"PostgreSQL on port {self.port} is already running")
        self._spawn(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (if running) and start again on the same port, cluster and credentials."""
        if self.alive():
            self.stop()
        self._spawn(timeout)

    def to_state(self) -> dict:
        return {
            "pid": self.pid,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "data_dir": str(self.data_dir),
            "log": str(self.log),
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "durable": self.durable,
        }

    @classmethod
    def from_state(cls, s: dict) -> PostgresServer:
        return cls(
            port=s["port"],
            user=s["user"],
            password=s["password"],
            database=s["database"],
            data_dir=Path(s["data_dir"]),
            log=Path(s["log"]),
            admin_user=s["admin_user"],
            admin_password=s["admin_password"],
            durable=s.get("durable", True),
            _pid=s.get("pid"),
        )


def _tail(log: Path, n: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _stop_pid(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGINT)
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


def _initdb(data_dir: Path, admin_password: str, log: Path) -> None:
    """Create a cluster in ``data_dir`` (must not exist or be empty) with password auth on TCP."""
    bin_dir = find_bin_dir()
    account = _service_account()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_traversable(data_dir, account)
    pwfile = data_dir.parent / f".pw-{uuid.uuid4().hex}"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(admin_password + "\n")
    try:
        _chown_tree(data_dir, account)
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        argv, as_account = _as_account(
            account,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        with open(log, "ab") as fh:
            rc = subprocess.call(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data_dir.parent, **as_account
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if rc != 0:
        raise PostgresSetupError(f"initdb failed (exit {rc}); see {log}:\n{_tail(log)}")


def _ensure_app_user(server: PostgresServer) -> None:
    from psycopg2 import sql

    conn = server.connect("postgres", admin=True)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (server.user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB PASSWORD %s").format(sql.Identifier(server.user)),
                (server.password,),
            )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (server.database,))
            if not cur.fetchone():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(server.database), sql.Identifier(server.user)
                    )
                )
    finally:
        conn.close()


def start(
    data_dir: Path | None = None, port: int | None = None, durable: bool = False, timeout: float = 60.0
) -> PostgresServer:
    """initdb a fresh cluster, start it on 127.0.0.1, create user :data:`APP_USER` and database :data:`APP_DATABASE`.

    Returns once the database accepts password logins. ``data_dir`` defaults to a fresh
    directory under ``run_dir("postgres")`` and must not hold a cluster already.
    ``durable=False`` (tests) turns fsync off. Credentials are random for every call.
    """
    find_bin_dir()
    if data_dir is None:
        data_dir = run_dir("postgres") / f"pg-{uuid.uuid4().hex[:12]}" / "data"
    data_dir = Path(data_dir)
    if (data_dir / "PG_VERSION").exists():
        raise PostgresSetupError(f"{data_dir} already holds a cluster; start() needs a new directory")
    log = data_dir.parent / "postgres.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(
        port=port or free_port(),
        user=APP_USER,
        password=secrets.token_urlsafe(24),
        database=APP_DATABASE,
        data_dir=data_dir,
        log=log,
        admin_password=secrets.token_urlsafe(24),
        durable=durable,
    )
    _initdb(data_dir, server.admin_password, log)
    server._spawn(timeout)
    _ensure_app_user(server)
    return server


# --------------------------------------------------------------------------- command line


def _state_path() -> Path:
    return run_dir("postgres") / STATE_FILE


def _write_state(server: PostgresServer) -> None:
    fd = os.open(_state_path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(server.to_state(), f, indent=2)


def attach() -> PostgresServer:
    """Handle on the server started by ``python -m infra.postgres start``; raises if none is running."""
    path = _state_path()
    if not path.exists():
        raise PostgresSetupError("no PostgreSQL started from the command line: run `python -m infra.postgres start`")
    server = PostgresServer.from_state(json.loads(path.read_text()))
    if not server.alive():
        raise PostgresSetupError(
            f"the PostgreSQL recorded in {path} is not running: run `python -m infra.postgres start`"
        )
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.postgres", description="Local PostgreSQL server.")
    parser.add_argument("command", choices=["start", "stop", "status", "install"])
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
            print(f"PostgreSQL server binaries in {find_bin_dir()}")
            return 0
        if args.command == "start":
            try:
                server = attach()
                print(f"already running on 127.0.0.1:{server.port} (pid {server.pid})")
                return 0
            except PostgresSetupError:
                pass
            if _state_path().exists():  # restart the persistent CLI cluster with its credentials
                server = PostgresServer.from_state(json.loads(_state_path().read_text()))
                if port_open(server.port):
                    server.port = free_port()
                server._spawn(60.0)
            else:
                server = start(data_dir=run_dir("postgres", "cli") / "data", durable=True)
            _write_state(server)
            print(
                f"PostgreSQL running on 127.0.0.1:{server.port} (pid {server.pid}), database {server.database}, "
                f"user {server.user}; credentials in {_state_path()} (mode 600)"
            )
            return 0
        if args.command == "stop":
            try:
                server = attach()
            except PostgresSetupError as e:
                print(e)
                return 0
            server.stop()
            server._pid = None
            _write_state(server)
            print(f"stopped PostgreSQL on 127.0.0.1:{server.port}")
            return 0
        server = attach()  # status
        ok = port_open(server.port)
        print(
            f"{'accepting connections' if ok else 'not listening'}: 127.0.0.1:{server.port} pid {server.pid} "
            f"database {server.database} user {server.user} data {server.data_dir}"
        )
        return 0 if ok else 1
    except PostgresSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
