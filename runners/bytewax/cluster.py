"""Run the dataflow as a Bytewax cluster: P processes × W worker threads each.

Launch the whole cluster on this machine (what ``obsflow run --runner bytewax
--processes P --workers-per-process W`` does)::

    launch(ClusterRun(spec_path, source="kafka", bounded=True), processes=2, workers=2)

(the processes are forked from the launcher after it has imported what they run, so
each starts without paying those imports again; :func:`spawn` without ``fork`` starts
``python -m bytewax.run`` processes instead)

or one process of a cluster spread over machines (every process gets the same
``addresses`` list, in the same order, and its own index)::

    obsflow run --runner bytewax --source kafka --workers-per-process 2 \\
        --process-id 0 --addresses host-a:2101,host-b:2101          # on host-a
    obsflow run ... --process-id 1 --addresses host-a:2101,host-b:2101   # on host-b

which is Bytewax's own ``python -m bytewax.run runners.bytewax.cluster:flow -w 2 -i 0 -a
"host-a:2101;host-b:2101"`` with the run described by ``$OBSFLOW_BYTEWAX_RUN`` (JSON of
:class:`ClusterRun`): :func:`flow` is the module-level factory ``bytewax.run`` imports in
each process.

Each process plans the Kafka partitions itself (from the positions in the Iceberg
tables, which do not move while the cluster is down) and Bytewax assigns every topic
partition to exactly one worker of the cluster. Output goes through one sink partition
per table (:mod:`runners.bytewax.table_sink`), so recorded positions stay sound with any
number of workers.

Recovery: the Iceberg tables are the checkpoint. Every commit records the positions the
table has fully received (stage tables: what every shard has fully emitted), and a
restarted cluster resumes each partition from the smallest position over the tables it
feeds and drops rows below each table's own position. Bytewax's recovery store
(``-r DIR``) is not used: it would snapshot operator state at epoch ends that are not
aligned with the Iceberg commits, so a restore could pair stage state with source
positions from a different moment (duplicates in the stage's buffers); replaying from the
tables' positions rebuilds the stage state from the records instead. When one process
dies (``kill -9``), the others lose their peer and stop (or are stopped); start the whole
cluster again and it resumes — nothing lost, nothing twice.
"""

from __future__ import annotations

from typing import cast
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runners import defaults

RUN_ENV = "OBSFLOW_BYTEWAX_RUN"


@dataclass
class ClusterRun:
    """What every process of the cluster runs (serialised into ``$OBSFLOW_BYTEWAX_RUN``)."""

    spec: str
    warehouse: str | None = None
    source: str = "kafka"
    bounded: bool = False
    duration_s: float | None = None
    max_records: int | None = None
    count: int | None = defaults.COUNT
    seed: int = defaults.SEED
    start_ms: int | None = None
    rate_per_s: float = defaults.RATE_PER_S
    bad_fraction: float = defaults.BAD_FRACTION
    batch_size: int = defaults.BATCH_SIZE
    extra_env: dict = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ClusterRun:
        raw = os.environ.get(RUN_ENV)
        if not raw:
            raise RuntimeError(
                f"${RUN_ENV} is not set: start processes with `obsflow run --runner bytewax --processes N` "
                f"or set it to the JSON of runners.bytewax.cluster.ClusterRun"
            )
        return cls(**json.loads(raw))


def _spec(run: ClusterRun):
    from pipelines.loader import load_spec

    spec = load_spec(run.spec)
    if run.warehouse:
        catalog = spec.storage.catalog.model_copy(update={"warehouse": run.warehouse, "uri": None})
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"catalog": catalog})})
    return spec


def build(run: ClusterRun):
    """The dataflow of ``run`` (planned in this process)."""
    from runners.bytewax.flow import EmbeddedBytewaxSource, KafkaBytewaxSource, build_flow
    from runners.job import RunRequest, embedded_source, kafka_plan, resume_positions

    spec = _spec(run)
    req = RunRequest(
        spec=spec,
        runner="bytewax",
        source=run.source,
        count=run.count,
        duration_s=run.duration_s,
        seed=run.seed,
        start_ms=run.start_ms,
        rate_per_s=run.rate_per_s,
        bad_fraction=run.bad_fraction,
        batch_size=run.batch_size,
        bounded=run.bounded,
        max_records=run.max_records,
    )
    if run.source == "kafka":
        source, ranges, _ = kafka_plan(req)
        tick = max(0.2, min(1.0, spec.storage.commit.max_seconds.total_seconds() / 2))
        return build_flow(spec, KafkaBytewaxSource(source, ranges, tick_s=tick), by_table=True)
    return build_flow(spec, EmbeddedBytewaxSource(embedded_source(req), resume_positions(spec)), by_table=True)


def flow():
    """Module-level factory for ``python -m bytewax.run runners.bytewax.cluster:flow``."""
    return build(ClusterRun.from_env())


def run_process(run: ClusterRun, process_id: int, addresses: list[str], workers: int) -> None:
    """Run process ``process_id`` of the cluster in this interpreter (blocks until done)."""
    from bytewax._bytewax import cluster_main

    for k, v in run.extra_env.items():
        os.environ.setdefault(k, v)
    cluster_main(build(run), addresses, process_id, worker_count_per_proc=workers)


def prepare_tables(run: ClusterRun) -> None:
    """Create the run's tables once, before the processes start, so that they do not all
    race to create them in the catalog (and a catalog that cannot be opened fails here,
    with its own message, rather than in every process)."""
    from pipelines.graph import PipelineGraph
    from sinks.catalog import load_tables, open_catalog

    spec = _spec(run)
    catalog = open_catalog(spec.storage)
    try:
        load_tables(catalog, spec.storage, PipelineGraph.tables_of(spec))
    finally:
        engine = getattr(catalog, "engine", None)  # SQL catalogs: no pooled connection left for forked processes
        if engine is not None:
            engine.dispose()


def local_addresses(processes: int) -> list[str]:
    """One free loopback address per process (infra/, the test services, is not in the wheel)."""
    import socket

    def free_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return [f"127.0.0.1:{free_port()}" for _ in range(processes)]


class ForkedProcess:
    """A cluster process forked from the launcher, with the part of ``subprocess.Popen``'s
    interface :func:`wait` and callers use (``pid``, ``returncode``, ``poll``, ``wait``,
    ``kill``, ``terminate``, ``send_signal``; a negative code is the signal that ended it)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"cluster process {self.pid}", cast(float, timeout))
            time.sleep(0.05)
        return cast(int, self.returncode)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _forked_child(
    run: ClusterRun, process_id: int, addresses: list[str], workers: int, log: Path | None, env: dict
) -> None:
    """The body of a forked cluster process: never returns (``os._exit``), so nothing of
    the launcher's (its atexit handlers, its open catalog) runs twice."""
    code = 1
    try:
        if log is not None:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.update(env)
        from datetime import timedelta

        from bytewax._bytewax import cli_main

        # exactly what `python -m bytewax.run ... -w W -i I -a A` runs (no recovery store)
        cli_main(
            build(run),
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=10),
            recovery_config=None,
        )
        from runners.bytewax.flow import CLOSE_ERRORS

        if CLOSE_ERRORS:  # a final commit failed (kept: Bytewax aborts on an error in a sink's close)
            raise CLOSE_ERRORS[0]
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fork(
    run: ClusterRun, processes: int, workers: int, addresses: list[str], log_dir: Path | None, env: dict
) -> list[ForkedProcess]:
    """Fork the cluster's processes from this one, after importing what every process
    imports: each starts without the ~1.5-3 s of CPU its imports cost (two processes
    importing at once also compete for the cores the run needs)."""
    import gc

    import bytewax._bytewax  # noqa: F401  (imported once, here, for every child)
    import runners.bytewax.flow  # noqa: F401
    import runners.job  # noqa: F401

    gc.collect()  # a child must not be the one to finalize the launcher's objects
    sys.stdout.flush()
    sys.stderr.flush()
    procs = []
    for i in range(processes):
        log = log_dir / f"process-{i}.log" if log_dir else None
        pid = os.fork()
        if pid == 0:
            _forked_child(run, i, addresses, workers, log, env)
        procs.append(ForkedProcess(pid))
    return procs


def spawn(
    run: ClusterRun,
    processes: int,
    workers: int,
    addresses: list[str] | None = None,
    log_dir: Path | None = None,
    env: dict | None = None,
    fork: bool = False,
) -> list:
    """Start the ``processes`` processes of a local cluster; return them (the caller
    waits). Output goes to ``log_dir/process-<i>.log`` if given.

    ``fork``: fork them from this process (:class:`ForkedProcess`), sharing the imports
    it has already paid for; for a launcher that holds no clients or threads of its own
    (``obsflow run --processes``). Otherwise each is a new ``python -m bytewax.run``
    (``subprocess.Popen``), which is safe from any process (a test runner holding Kafka
    clients, for instance)."""
    addresses = addresses or local_addresses(processes)
    prepare_tables(run)
    # one run id for every process: their commits' counters add up to the run's (sinks.iceberg.RUN_ID_ENV)
    run_id = os.environ.get("OBSFLOW_RUN_ID") or uuid.uuid4().hex
    extra_env = {"OBSFLOW_RUN_ID": run_id, **(env or {}), RUN_ENV: run.to_env()}
    if fork and hasattr(os, "fork"):
        return _fork(run, processes, workers, addresses, log_dir, extra_env)
    child_env = {**os.environ, **extra_env}
    root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = root + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    procs = []
    for i in range(processes):
        out = open(log_dir / f"process-{i}.log", "wb") if log_dir else None
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bytewax.run",
                    "runners.bytewax.cluster:flow",
                    "-w",
                    str(workers),
                    "-i",
                    str(i),
                    "-a",
                    ";".join(addresses),
                ],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                cwd=root,
            )
        )
        if out:
            out.close()
    return procs


def wait(procs: list, timeout: float | None = None, peer_grace_s: float = 30.0) -> list[int]:
    """Wait for every process; once one fails, give the others ``peer_grace_s`` to stop,
    then kill them. Returns the exit codes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    failed_at = None
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
            failed_at = now
        if (failed_at is not None and now - failed_at > peer_grace_s) or (deadline is not None and now > deadline):
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    return [p.returncode for p in procs]


def launch(run: ClusterRun, processes: int, workers: int, log_dir: Path | None = None, fork: bool = True) -> int:
    """Run a local cluster to its end; 0 if every process exited cleanly. The processes
    are forked from this one (see :func:`spawn`) unless ``fork`` is false."""
    procs = spawn(run, processes, workers, log_dir=log_dir, fork=fork)
    try:
        codes = wait(procs)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        codes = wait(procs, timeout=30)
    return 0 if all(c == 0 for c in codes) else 1
