"""The product-event hot path of two source trees in one run: ``path native`` and ``path
python`` (as ``bench/decoder.py`` builds them: decode → validate → scrub → enrich → shape,
dead letters) on the same generator events, rounds interleaved (one process per tree and
round: a warm pass, then the best of two timed passes), best round of each, CPU time.

A tree is a git revision of this repository (exported with ``git archive`` to a
temporary folder) or ``.`` (the working tree). Both use the installed extension, unless
``--dot-site`` names a folder holding a build of the working tree's ``native/`` (``pip
install --target``): it goes first on the working tree's ``PYTHONPATH``.

    python bench/hotpath_ab.py aeb735f . [--records 40000] [--rounds 3] [--dot-site .native-site]

The last line of the output is one JSON object with every figure."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_round(tree: str, records: int) -> dict[str, float]:
    """Seconds of CPU for one pass of each path over ``records`` events, on ``tree``."""
    sys.path.insert(0, tree)
    os.chdir(tree)
    os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")
    from bench import decoder as bd

    events = bd._batches("event", records, 0.01)
    out = {}
    for d in ("native", "python"):
        g = bd._graph(d)
        for b in events:
            g.process(b)
        best = float("inf")
        for _ in range(2):
            t = time.process_time()
            for b in events:
                g.process(b)
            best = min(best, time.process_time() - t)
        out[d] = best
    return out


def export(rev: str, into: Path) -> str:
    """The folder holding ``rev``'s files (``.``: this working tree)."""
    if rev == ".":
        return str(ROOT)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    tar_path = into.with_suffix(".tar")
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return str(into)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2, help="two git revisions, or . for the working tree")
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round", help=argparse.SUPPRESS)  # internal: one round on this folder
    ap.add_argument("--dot-site", help="a folder put first on the working tree's PYTHONPATH (its own extension build)")
    args = ap.parse_args()
    if args.round:
        print(json.dumps(one_round(args.round, args.records)))
        return 0
    with tempfile.TemporaryDirectory(prefix="hotpath-ab-") as tmp:
        folders = {rev: export(rev, Path(tmp) / f"tree{k}") for k, rev in enumerate(args.trees)}
        best = {rev: {"native": float("inf"), "python": float("inf")} for rev in folders}
        for _ in range(args.rounds):
            for rev, folder in folders.items():
                site = [str(Path(args.dot_site).resolve())] if args.dot_site and rev == "." else []
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([*site, folder]))
                res = subprocess.run(
                    [sys.executable, __file__, *args.trees, "--records", str(args.records), "--round", folder],
                    cwd=folder,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items():
                    best[rev][k] = min(best[rev][k], v)
    rates = {rev: {k: args.records / v for k, v in b.items()} for rev, b in best.items()}
    for rev, r in rates.items():
        print(
            f"{rev:12s} path native {r['native']:>10,.0f}/s ({1e6 / r['native']:.2f} us)   "
            f"path python {r['python']:>10,.0f}/s ({1e6 / r['python']:.2f} us)"
        )
    load = os.getloadavg()[0]
    print(f"(1-minute load average: {load:.1f} on {os.cpu_count()} cores)")
    print(
        json.dumps(
            {"records_per_s": rates, "meta": {"records": args.records, "rounds": args.rounds, "load_avg_1m": load}}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
