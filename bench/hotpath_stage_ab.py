"""Scrub + enrich CPU per record: a base tree's ``transforms/scrub.py`` and
``transforms/enrich.py`` against this tree's, in one process, on the same decoded and
validated generator events (1% malformed, 5,000 a batch), rounds interleaved, best of
each; the outputs (tables and reject details) are checked equal first. Then the IPv4
anonymization alone (``Scrubber._anonymize``) over each batch's distinct ``client_ip``.

The base tree is a folder holding the older files (e.g. ``git archive 856fb45 | tar -x -C /tmp/base``).

    python bench/hotpath_stage_ab.py /tmp/base [--records 40000] [--rounds 9]"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def _load(base: Path, name: str):
    """``base``'s ``transforms/<name>.py`` as a module of its own (``base_<name>``)."""
    spec = importlib.util.spec_from_file_location(f"base_{name}", base / "transforms" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"base_{name}"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from bench import decoder as bd
    import pyarrow.compute as pc

    from core.encodings import Encodings, one_array
    from pipelines.spec import EnrichStep, PrivacySpec, ScrubStep, ValidateStep
    from schemas.codecs import codec_for
    from transforms.enrich import Enricher
    from transforms.scrub import Scrubber
    from transforms.validate import Validator

    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path, help="a folder holding the base tree's files")
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    old_scrub, old_enrich = _load(args.base, "scrub"), _load(args.base, "enrich")
    codec = codec_for("json", "event", 65536)
    validate = Validator("event", ValidateStep(kind="validate"))
    prepared = [validate(codec.decode(r)) for r in bd._batches("event", args.records, 0.01)]
    privacy, scrub_step, enrich_step = PrivacySpec(), ScrubStep(kind="scrub"), EnrichStep(kind="enrich")
    steps = {
        "base": (
            old_scrub.Scrubber("event", scrub_step, privacy, hotpath="native"),
            old_enrich.Enricher("event", enrich_step, {}),
        ),
        "this": (Scrubber("event", scrub_step, privacy, hotpath="native"), Enricher("event", enrich_step, {})),
    }

    def one(which: str) -> tuple[float, list]:
        scrub, enrich = steps[which]
        spent, outs = 0.0, []
        for p in prepared:
            b = copy.copy(p)
            b.encodings, b.rejects = Encodings(), copy.deepcopy(p.rejects)
            t = time.process_time()
            b = enrich(scrub(b))
            spent += time.process_time() - t
            outs.append((b.table, b.rejects.details))
        return spent, outs

    base_out, this_out = one("base")[1], one("this")[1]
    assert all(a[0].equals(b[0]) and a[1] == b[1] for a, b in zip(base_out, this_out)), "outputs differ"
    best = {"base": float("inf"), "this": float("inf")}
    for _ in range(args.rounds):
        for which in best:
            best[which] = min(best[which], one(which)[0])
    for which, v in best.items():
        print(f"{which:5s} scrub + enrich {v / args.records * 1e6:.3f} us a record (CPU, best of {args.rounds})")
    # the IPv4 anonymization alone, over each batch's distinct client_ip values
    addresses = [pc.dictionary_encode(one_array(p.table.column("client_ip"))).dictionary for p in prepared]
    anon = {which: steps[which][0] for which in steps}
    assert all(anon["base"]._anonymize(a).equals(anon["this"]._anonymize(a)) for a in addresses), "outputs differ"
    best = {"base": float("inf"), "this": float("inf")}
    for _ in range(args.rounds):
        for which in best:
            t = time.process_time()
            for a in addresses:
                anon[which]._anonymize(a)
            best[which] = min(best[which], time.process_time() - t)
    for which, v in best.items():
        print(f"{which:5s} IPv4 anonymization {v / args.records * 1e6:.4f} us a record (CPU, best of {args.rounds})")
    print(f"(1-minute load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
