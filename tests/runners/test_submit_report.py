"""``obsflow submit`` tells its user the run id the Flink job uses (``obsflow.stats`` and
the UI group a job's counters by it): :func:`runners.cli.flink.submit_report`, the lines
it prints on stderr (the job id alone stays on stdout). On a real cluster:
``tests/runners/test_flink_runner.py`` checks the printed id is the one in the commits."""

from __future__ import annotations

from runners.beam.flink import Submitted
from runners.cli.flink import submit_report
from runners.flink_rest import JobInfo


def test_submit_report_names_the_jobs_run_id():
    sub = Submitted(
        job=JobInfo(jid="a" * 32, name="obsflow-x", state="RUNNING", start_time_ms=1, duration_ms=5),
        job_name="obsflow-x",
        resumed_from={"events:0": 101, "events:1": 7},
        partitions=2,
        seconds=12.4,
        run_id="0123456789abcdef0123456789abcdef",
    )
    assert submit_report(sub) == [
        f"job {'a' * 32} RUNNING as 'obsflow-x': 2 partitions from events:0@101, events:1@7 (submitted in 12s)",
        "run id 0123456789abcdef0123456789abcdef",
        "  (the job's counters in obsflow.stats and in `obsflow ui` carry it; "
        "set $OBSFLOW_RUN_ID before submitting to choose it)",
    ]
