"""The obsflow command as a user runs it: run, tables, query, and clear errors."""

import os
import subprocess
import sys

import yaml

from pipelines import DEFAULT_SPEC
from datetime import UTC


def obsflow(*args, env=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args], capture_output=True, text=True, env=e, timeout=600
    )


def test_run_tables_query(tmp_path):
    wh = str(tmp_path / "wh")
    r = obsflow("run", "--count", "2000", "--warehouse", wh, "--runner", "bytewax")
    assert r.returncode == 0, r.stderr
    assert "8,000 records in" in r.stdout  # events, logs, spans, metrics
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in r.stdout
    assert "obs.events" in r.stdout and "obs.dead_letters" in r.stdout
    t = obsflow("tables", "--warehouse", wh)
    assert t.returncode == 0
    lines = {l.split()[0]: l.split() for l in t.stdout.splitlines() if l.startswith("obs.")}
    assert set(lines) == {
        "obs.events",
        "obs.logs",
        "obs.dead_letters",
        "obs.spans",
        "obs.traces",
        "obs.metrics",
        "obs.sessions",
        "obs.alerts",
    }
    q = obsflow("query", "SELECT count(*) AS n FROM obs.logs", "--warehouse", wh, "--format", "csv")
    assert q.returncode == 0, q.stderr
    n_logs = int(q.stdout.splitlines()[1])
    assert lines["obs.logs"][1] == f"{n_logs:,}"
    bad = obsflow("query", "SELECT nope FROM obs.logs", "--warehouse", wh)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_wrong_spec_fails_at_load_with_the_key_path(tmp_path):
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["flows"][0]["steps"][0]["max_future"] = "soon"
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    r = obsflow("run", "--spec", str(spec), "--count", "10", "--warehouse", str(tmp_path / "wh"))
    assert r.returncode == 2
    assert "flows[0].steps[0].max_future: expected a duration" in r.stderr


def test_missing_pseudonym_key_is_explained(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_PSEUDONYM_KEY"}
    r = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--count", "10", "--warehouse", str(tmp_path / "wh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2
    assert "set the environment variable OBSFLOW_PSEUDONYM_KEY" in r.stderr and "--dev-key" in r.stderr


# -- obsflow maintain ------------------------------------------------------------------------


def _table_rows(stdout: str) -> list[list[str]]:
    """The rows of a table the CLI printed (header, dashes, rows), columns split on 2+ spaces."""
    import re

    lines = [l for l in stdout.splitlines() if l.strip()]
    assert set(lines[1].replace(" ", "")) == {"-"}, stdout
    return [re.split(r"\s{2,}", l.strip()) for l in [lines[0], *lines[2:]]]


def test_maintain_archives_logs_and_expires_the_archive_after_a_year(tmp_path):
    """`obsflow maintain` on the default spec: logs older than 30 days move to
    obs.logs_archive, which drops what is older than a year in the same run; events keep
    90 days; the printed report has the exact counts."""
    from datetime import datetime, timedelta

    import pyarrow.compute as pc

    from pipelines.loader import parse_spec
    from sources.generator import EmbeddedSource
    from tests.helpers import read_table, strip_traces, write_through_sink

    wh = tmp_path / "wh"
    d = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()))
    d["storage"]["catalog"]["warehouse"] = str(wh)
    spec = parse_spec(d)
    now = datetime.now(UTC)
    for suffix, age in (("-old", timedelta(days=400)), ("-mid", timedelta(days=45)), ("-new", timedelta(hours=2))):
        sources = [s.model_copy(update={"topic": s.topic + suffix}) for s in spec.sources]
        write_through_sink(
            spec,
            EmbeddedSource(
                sources,
                count=300,
                seed=5,
                start_ms=int((now - age).timestamp() * 1000),
                rate_per_s=50.0,
                batch_size=300,
            ),
        )
    tables = {n: read_table(spec, n) for n in ("events", "logs", "dead_letters")}

    def older(name, col, days):
        return pc.sum(pc.less(tables[name].column(col), now - timedelta(days=days))).as_py() or 0

    logs_expired, logs_past_a_year = older("logs", "ts", 30), older("logs", "ts", 365)
    assert logs_expired > logs_past_a_year > 0
    r = obsflow("maintain", "--warehouse", str(wh), "--steps", "retention")
    assert r.returncode == 0, r.stderr
    rows = _table_rows(r.stdout)
    assert rows[0] == [
        "table",
        "expired rows",
        "archived rows",
        "compacted partitions",
        "files before",
        "files after",
        "expired snapshots",
        "orphan files",
        "orphan bytes",
        "retries",
        "seconds",
    ]
    f = lambda n: f"{n:,}"  # noqa: E731
    zeros = ["0"] * 7
    assert [row[:-1] for row in rows[1:]] == [
        ["obs.dead_letters", f(older("dead_letters", "received_at", 30)), "0", *zeros],
        ["obs.events", f(older("events", "ts", 90)), "0", *zeros],
        ["obs.logs", f(logs_expired), f(logs_expired), *zeros],
        ["obs.logs_archive", f(logs_past_a_year), "0", *zeros],
    ]
    assert all(row[-1].replace(".", "", 1).isdigit() for row in rows[1:])
    assert read_table(spec, "logs_archive").num_rows == logs_expired - logs_past_a_year
    assert read_table(spec, "logs").num_rows == tables["logs"].num_rows - logs_expired
    again = obsflow(
        "maintain", "--warehouse", str(wh), "--steps", "retention", "--table", "logs", "--table", "logs_archive"
    )
    assert again.returncode == 0, again.stderr
    assert [row[:-1] for row in _table_rows(again.stdout)[1:]] == [
        ["obs.logs", "0", "0", *zeros],
        ["obs.logs_archive", "0", "0", *zeros],
    ]


def test_maintain_without_tables_says_so(tmp_path):
    r = obsflow("maintain", "--warehouse", str(tmp_path / "empty"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "no tables in namespace 'obs'\n"


# -- obsflow query --saved -------------------------------------------------------------------


def _duck_round(x: float, digits: int) -> float:
    """DuckDB's round() of a DOUBLE: half away from zero at ``digits`` decimals."""
    import math

    p = 10.0**digits
    y = x * p
    return (math.floor(y + 0.5) if y >= 0 else -math.floor(-y + 0.5)) / p


def test_query_saved_gives_the_answers_computed_from_the_tables(tmp_path):
    """The saved funnel, error-rate and latency queries through `obsflow query --saved`, their CSV compared with
    the same figures computed in Python from the tables the run wrote."""
    import csv
    import io

    from pipelines.loader import load_spec
    from tests.helpers import read_table

    wh = str(tmp_path / "wh")
    r = obsflow("run", "--count", "2000", "--warehouse", wh, "--runner", "bytewax")
    assert r.returncode == 0, r.stderr
    spec = load_spec(str(DEFAULT_SPEC))
    spec = spec.model_copy(
        update={
            "storage": spec.storage.model_copy(
                update={"catalog": spec.storage.catalog.model_copy(update={"warehouse": wh, "uri": None})}
            )
        }
    )

    def csv_of(header, rows):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue().replace("\r\n", "\n")

    # error rate by service, each line weighted by 1/sample_rate
    logs = read_table(spec, "logs").to_pylist()
    per: dict[str, list[float]] = {}
    for row in logs:
        e = per.setdefault(row["service"], [0.0, 0.0])
        w = 1.0 / row["sample_rate"]
        e[0] += w if row["level"] in ("ERROR", "FATAL") else 0.0
        e[1] += w
    expected = sorted(
        ((s, _duck_round(e, 1), _duck_round(n, 1), _duck_round(e / n, 4)) for s, (e, n) in per.items()),
        key=lambda t: (-t[3], t[0]),
    )
    assert len(expected) >= 3 and any(t[1] > 0 for t in expected)
    q = obsflow("query", "--saved", "error_rate_by_service", "--warehouse", wh, "--format", "csv")
    assert q.returncode == 0, q.stderr
    assert q.stdout.replace("\r\n", "\n") == csv_of(["service", "errors", "lines", "error_rate"], expected)

    # signup funnel: per step of the default funnel (written out here), sessions that reached
    # it (the longest prefix of steps that each occur in the session) and sessions whose last
    # step it was; those that reached the final step converted and dropped nowhere
    from tests.product.test_funnel_queries import STEPS

    events = read_table(spec, "events").to_pylist()
    per_session: dict[str, list] = {}
    for row in events:
        per_session.setdefault(row["session_id"], []).append(
            ({"type": row["event_type"], "form": row["form"], "step": row["form_step"]}, row["page"])
        )
    reached_k = []
    for evs in per_session.values():
        k = 0
        while k < len(STEPS) and any(STEPS[k][1](e, p) for e, p in evs):
            k += 1
        reached_k.append(k)
    n = len(STEPS)
    reached = [sum(1 for k in reached_k if k > i) for i in range(n)]
    assert reached[0] > reached[-1] > 0
    expected = [
        (
            i,
            STEPS[i][0],
            reached[i],
            sum(1 for k in reached_k if k == i + 1) if i < n - 1 else 0,
            _duck_round(100.0 * reached[i] / reached[0], 1),
        )
        for i in range(n)
    ]
    q = obsflow("query", "--saved", "funnel_dropoff", "--warehouse", wh, "--format", "csv")
    assert q.returncode == 0, q.stderr
    assert q.stdout.replace("\r\n", "\n") == csv_of(
        ["step_index", "step", "sessions", "dropped_after_step", "pct_of_first_step"], expected
    )

    # p99 latency by service, from the 1m RED metrics of server spans
    metrics = read_table(spec, "metrics").to_pylist()
    agg: dict[str, list] = {}
    for row in metrics:
        labels = dict(row["labels"] or [])
        if row["name"] == "span.duration_ms" and row["resolution"] == "1m" and labels.get("kind") == "SERVER":
            a = agg.setdefault(labels.get("service"), [None, None, 0])
            a[0] = row["p99"] if a[0] is None else max(a[0], row["p99"])
            a[1] = row["p50"] if a[1] is None else max(a[1], row["p50"])
            a[2] += row["count"]
    assert agg
    expected = sorted(
        ((s, _duck_round(p99, 3), _duck_round(p50, 3), n) for s, (p99, p50, n) in agg.items()),
        key=lambda t: (-t[1], t[0]),
    )
    q = obsflow("query", "--saved", "p99_latency_by_service", "--warehouse", wh, "--format", "csv")
    assert q.returncode == 0, q.stderr
    assert q.stdout.replace("\r\n", "\n") == csv_of(
        ["service", "worst_minute_p99_ms", "worst_minute_p50_ms", "calls"], expected
    )

    # the table format: same figures, a row count at the end
    t = obsflow("query", "--saved", "p99_latency_by_service", "--warehouse", wh)
    assert t.returncode == 0, t.stderr
    assert t.stdout.splitlines()[-1] == f"({len(expected)} row{'s' if len(expected) != 1 else ''})"
    assert [r[0] for r in _table_rows("\n".join(t.stdout.splitlines()[:-1]))[1:]] == [e[0] for e in expected]

    # an unknown saved query: a clear answer naming the saved ones, exit 2, no traceback
    u = obsflow("query", "--saved", "no_such_query", "--warehouse", wh)
    assert u.returncode == 2
    assert u.stderr.strip() == (
        "obsflow query: no saved query 'no_such_query'; saved queries: "
        "error_rate_by_service, funnel_dropoff, p99_latency_by_service, time_to_convert"
    )


# -- misuse: exit 2, one line, no traceback (issue 19 item 13) -------------------------------


def _one_line(r) -> str:
    """The single line a misuse prints on stderr (and nothing that looks like a traceback)."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[0]


MISUSES = [
    (["run", "--count", "-5"], "obsflow run: argument --count: expected a whole number >= 1, got '-5'"),
    (["run", "--count", "0"], "obsflow run: argument --count: expected a whole number >= 1, got '0'"),
    (["run", "--rate", "0"], "obsflow run: argument --rate: expected a number > 0, got '0'"),
    (["run", "--rate", "inf"], "obsflow run: argument --rate: expected a number > 0, got 'inf'"),
    (["run", "--duration", "-1"], "obsflow run: argument --duration: expected a number > 0, got '-1'"),
    (
        ["run", "--bad-fraction", "1.5"],
        "obsflow run: argument --bad-fraction: expected a number >= 0 and <= 1, got '1.5'",
    ),
    (["run", "--batch-size", "0"], "obsflow run: argument --batch-size: expected a whole number >= 1, got '0'"),
    (
        ["run", "--max-records", "-3", "--source", "kafka"],
        "obsflow run: argument --max-records: expected a whole number >= 1, got '-3'",
    ),
    (
        ["run", "--metrics-port", "70000"],
        "obsflow run: argument --metrics-port: expected a TCP port 0..65535, got '70000'",
    ),
    (
        ["run", "--metrics-host", "10.99.99.99", "--metrics-port", "0", "--count", "10"],
        "obsflow run: --metrics-host/--metrics-port: cannot serve on 10.99.99.99:0: ",
    ),
    (["run", "--processes", "0"], "obsflow run: argument --processes: expected a whole number >= 1, got '0'"),
    (
        ["run", "--workers-per-process", "-1"],
        "obsflow run: argument --workers-per-process: expected a whole number >= 1, got '-1'",
    ),
    (
        ["run", "--process-id", "2", "--addresses", "a:1,b:2"],
        "obsflow run: --process-id 2: expected 0..1 (one per address in --addresses)",
    ),
    (
        ["run", "--runner", "flink"],
        "obsflow run: argument --runner: invalid choice: 'flink' (choose from 'bytewax', 'beam')",
    ),
    (["submit", "--parallelism", "0"], "obsflow submit: argument --parallelism: expected a whole number >= 1, got '0'"),
    (["cancel", "j1", "--wait", "-1"], "obsflow cancel: argument --wait: expected a number >= 0, got '-1'"),
    (["jobs"], "obsflow jobs: --flink-master HOST:PORT (Flink's REST address) or $OBSFLOW_FLINK_MASTER is required"),
    (
        ["maintain", "--steps", "explode"],
        (
            "obsflow maintain: --steps: expected a comma-separated subset of "
            "retention,compact,expire,orphans, got 'explode'"
        ),
    ),
    (
        ["maintain", "--table", "nope"],
        (
            "obsflow maintain: --table: no table 'nope'; tables: alerts, dead_letters, events, "
            "logs, metrics, sessions, spans, traces (and <table>_archive)"
        ),
    ),
]


def test_cli_misuse_exits_2_with_one_line(tmp_path):
    """Every misuse the issue lists (and the same class of flag), each answered with one
    line and exit 2, without starting a run: ``--count -5`` used to run without end and
    ``--rate 0`` to end in a ZeroDivisionError traceback; ``maintain --steps explode`` did
    nothing and exited 0."""
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_FLINK_MASTER"}
    wh = str(tmp_path / "wh")
    for argv, expected in MISUSES:
        extra = ["--warehouse", wh] if argv[0] in ("run", "maintain") else []
        r = subprocess.run(
            [sys.executable, "-m", "runners.cli", *argv, *extra], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 2, (argv, r.returncode, r.stderr[-2000:])
        line = _one_line(r)
        assert line.startswith(expected), (argv, line)
    assert not (tmp_path / "wh").exists()  # no run started, no warehouse made


def test_missing_key_on_beam_is_one_line(tmp_path):
    """Beam used to log the worker's traceback before the CLI's answer."""
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_PSEUDONYM_KEY"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.cli",
            "run",
            "--runner",
            "beam",
            "--count",
            "10",
            "--no-progress",
            "--warehouse",
            str(tmp_path / "wh"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert _one_line(r) == (
        "obsflow: no pseudonymization key: set the environment variable OBSFLOW_PSEUDONYM_KEY (or "
        "privacy.pseudonym_key in the spec) to a secret of at least 16 characters (or pass --dev-key "
        "for a local trial)"
    )


def test_query_and_tables_on_a_missing_warehouse_say_so_and_create_nothing(tmp_path):
    wh = tmp_path / "no" / "such"
    for argv in (["query", "SELECT count(*) FROM obs.events"], ["tables"], ["query", "--saved", "funnel_dropoff"]):
        r = obsflow(*argv, "--warehouse", str(wh))
        assert r.returncode == 2, r.stderr
        assert _one_line(r) == (
            f"obsflow: no warehouse at {wh} (storage.catalog.warehouse): nothing has been written "
            f"there; run `obsflow run` to create it, or name an existing one with --warehouse or the spec"
        )
        assert not (tmp_path / "no").exists()
    wh.mkdir(parents=True)  # a directory without a catalog is no warehouse either
    r = obsflow("tables", "--warehouse", str(wh))
    assert r.returncode == 2 and _one_line(r).startswith(f"obsflow: no Iceberg catalog at {wh / 'catalog.db'}")
    assert list(wh.iterdir()) == []


def test_bytewax_failure_ends_with_obsflows_one_line_even_with_rust_backtrace(tmp_path):
    """An unexpected failure inside a Bytewax operator, with RUST_BACKTRACE set: Rust's
    backtrace and the Python traceback come first (for a bug report), obsflow's one-line
    reason is the last thing printed, exit 1 (the old code ended on the Python traceback).
    The fault is injected into the embedded source by a sitecustomize on PYTHONPATH."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import sources.generator as g\n\n"
        "def _boom(self, *a, **k):\n"
        "    raise ZeroDivisionError('injected by the test')\n\n"
        "g._Clock.__init__ = _boom\n"
    )
    env = {"RUST_BACKTRACE": "1", "PYTHONPATH": os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")])}
    r = obsflow(
        "run", "--runner", "bytewax", "--count", "10", "--no-progress", "--warehouse", str(tmp_path / "wh"), env=env
    )
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "stack backtrace:" in r.stderr  # Rust's, as asked for
    assert lines[-1].startswith("obsflow: failed: ZeroDivisionError: injected by the test (at "), lines[-1]


def test_query_json_writes_binary_as_base64(tmp_path):
    """`--format json` used to print binary columns as Python ``b'...'`` reprs."""
    import base64
    import json

    from pipelines.loader import load_spec
    from sinks.catalog import open_catalog

    spec = load_spec(str(DEFAULT_SPEC))
    open_catalog(
        spec.storage.model_copy(
            update={"catalog": spec.storage.catalog.model_copy(update={"warehouse": str(tmp_path / "wh"), "uri": None})}
        )
    )  # an empty warehouse
    r = obsflow(
        "query",
        "SELECT '\\x00\\xFFraw'::BLOB AS raw, NULL::BLOB AS none, 7 AS n",
        "--format",
        "json",
        "--warehouse",
        str(tmp_path / "wh"),
    )
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row == {"raw": base64.b64encode(b"\x00\xffraw").decode(), "none": None, "n": 7}
    h = obsflow("query", "--help")
    assert "base64" in h.stdout


def test_query_reads_a_local_warehouse_without_loading_the_spec_model_or_pyiceberg(tmp_path):
    """Where a one-row query's time went (issue 13.8): importing and validating the whole
    spec model and pyiceberg, and loading every table's metadata. After a first query has
    validated the spec (cached by its bytes), a query on a local warehouse imports neither
    and names only the table it reads."""
    from pipelines.loader import load_spec
    from sinks.catalog import open_catalog

    spec = load_spec(str(DEFAULT_SPEC))
    open_catalog(
        spec.storage.model_copy(
            update={"catalog": spec.storage.catalog.model_copy(update={"warehouse": str(tmp_path / "wh"), "uri": None})}
        )
    )
    env = {**os.environ, "OBSFLOW_CACHE": str(tmp_path / "cache")}
    code = (
        "import sys\nfrom runners.cli import main\nrc = main(['query', 'SELECT 41 + 1 AS n', '--warehouse', sys.argv[1]])\n"
        "print(rc, sorted(m for m in ('pyiceberg', 'pipelines.spec', 'sqlalchemy', 'pyarrow') if m in sys.modules))\n"
    )
    first = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "wh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith("0 ")  # validated the spec once
    again = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "wh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "0 []"


def test_beam_runner_import_prints_no_apitools_warning():
    """Beam logs "apitools not found ..." when it is imported (issue 13.9): nothing a user
    can act on. Importing the Beam runner the way `obsflow run --runner beam` does (with
    the CLI's logging set up) prints nothing; a whole Beam run over Kafka checks the same
    in tests/runners/test_topics.py."""
    code = (
        "import logging\nlogging.basicConfig(level='WARNING')\nimport runners.beam.run\n"
        "import apache_beam.io.gcp.bigquery\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "apitools" not in r.stderr, r.stderr
