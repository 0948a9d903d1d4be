"""The compiled prefilter (``obsflow_native.scrub_hints``, a chunked scan without a branch
per byte) flags every value the scrubber's hint regex (RE2) matches, on random values
drawn from the characters the patterns are made of, across the scan's 64-byte chunks."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.spec import PrivacySpec, ScrubStep
from transforms import scrub as scrub_mod
from transforms.scrub import Scrubber

ALPHABET = list("0123456789  --eaEAryRYjJkKsScCtToOnNpPwW_iIzZxXgGhHuU%%4040@./ab") + ["é", "\u212a", "\t"]


def _values(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        n = rng.choice([0, 1, 3, 13, 31, 63, 64, 65, 127, 128, 200])
        if rng.random() < 0.3:  # digit chains (cards, timestamps) with separators and breaks
            out.append("".join(rng.choice("0123456789 -x") for _ in range(n)))
        else:
            out.append("".join(rng.choice(ALPHABET) for _ in range(n)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prefilter_flags_every_hint_regex_match(seed):
    if scrub_mod._native is None:
        pytest.skip("obsflow_native not built")
    s = Scrubber("log", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key="k" * 16), hotpath="native")
    col = pa.array(_values(random.Random(seed), 4000), pa.string()).slice(5)  # a slice: offsets not at 0
    _validity, offsets, data = col.buffers()
    flags = np.frombuffer(scrub_mod._native.scrub_hints(offsets, data, col.offset, len(col)), dtype=np.bool_)
    regex = pc.match_substring_regex(col, s._any_hint).to_numpy(zero_copy_only=False)
    assert not (regex & ~flags).any(), [v for v, r, f in zip(col.to_pylist(), regex, flags) if r and not f][:5]
    # both verdicts are drawn often, and the superset is tight on ASCII (non-ASCII flags whole)
    ascii_only = np.array([v.isascii() for v in col.to_pylist()])
    assert 500 < int(regex.sum()) < len(col) - 500
    assert int((flags & ~regex & ascii_only).sum()) < int(regex.sum()) // 2
