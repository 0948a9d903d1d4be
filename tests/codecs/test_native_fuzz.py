"""cargo-fuzz over the compiled decoder (native/fuzz), bounded: ``make native-fuzz`` with
``OBSFLOW_NATIVE_FUZZ_SECONDS`` (default 40) per target, seeded from the Python fuzz
corpus. Fails when a target crashes (a panic, an out-of-bounds access under AddressSanitizer,
or a built column that is not a valid Arrow array); the crash input is kept under the
cargo cache (``fuzz/artifacts``) and its backtrace is in the failure message."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.native,
    pytest.mark.fuzz,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cargo") is None, reason="no cargo: the compiled decoder is not built here"),
]


def test_cargo_fuzz_finds_no_crash():
    seconds = int(os.environ.get("OBSFLOW_NATIVE_FUZZ_SECONDS", "40"))
    cache = pathlib.Path(os.environ.get("OBSFLOW_CACHE", pathlib.Path.home() / ".cache" / "obsflow")) / "cargo"
    run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "native-fuzz",
            f"PY={sys.executable}",
            f"FUZZ_SECONDS={seconds}",
            f"CARGO_CACHE={cache}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    report = run.stdout[-4000:] + run.stderr[-8000:]
    assert run.returncode == 0, f"cargo-fuzz found a crash or did not run:\n{report}"
    targets = [line for line in run.stdout.splitlines() if line.startswith("native-fuzz: target ")]
    assert len(targets) >= 4 and all(": no crash, " in line for line in targets), report  # json, otlp, otlp_json, avro
