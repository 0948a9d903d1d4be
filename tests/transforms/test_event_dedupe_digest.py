"""The dedupe's id digests: the native extension's ``id_digests`` and the Python reference
(``hashlib.blake2b(digest_size=16)``) give the same two words for every id, so a store
seeded by one build and read by another agrees; ``OBSFLOW_DECODER=python`` (or an
extension without ``id_digests``) takes the Python path."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from transforms import dedupe_store
from transforms.dedupe_store import array_digests, digester, digests

needs_native = pytest.mark.skipif(
    dedupe_store._native() is None, reason="obsflow_native without id_digests (build native/ first)"
)


def _adversarial() -> list[str]:
    return [
        "",
        "\x00",
        "a\x00b",
        "\x00" * 200,
        "é",
        "事件-ид-🙂",
        "\U0010ffff" * 40,
        "a" * 127,
        "a" * 128,
        "a" * 129,
        "a" * 255,
        "a" * 256,
        "a" * 257,
        "x" * 100_000,
        "ü" * 64,  # 128 bytes of UTF-8 from 64 characters
        "01J9Z8Q4WQ6Y1V3F5K7M9N2P4R",
        "550e8400-e29b-41d4-a716-446655440000",
    ]


def _random(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\x00", "é", "ß", "事", "🙂", "\u200b", "\U0001f600"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300))) for _ in range(n)]


def _reference(ids: list[str]) -> np.ndarray:
    buf = b"".join(hashlib.blake2b(e.encode(), digest_size=16).digest() for e in ids)
    return np.frombuffer(buf, dtype="<u8").reshape(-1, 2)


def test_python_digests_are_blake2b_words() -> None:
    hi, lo = digests(["", "abc"], "python")
    assert hi.dtype == np.uint64 and lo.dtype == np.uint64
    assert (
        hi.tobytes().hex() + lo.tobytes().hex()
        == "cae66941d9efbd40" + "cf4ab791c62b8d2b" + "4e4d88758ea67670" + "2109c90275287816"
    )


@needs_native
def test_native_digests_equal_python_over_adversarial_and_random_ids() -> None:
    ids = _adversarial() + _random(5_000, seed=7)
    ref = _reference(ids)
    for choice in ("native", "python"):
        hi, lo = digests(ids, choice)
        assert len(hi) == len(lo) == len(ids) == 5_017
        assert np.array_equal(hi, ref[:, 0]), choice
        assert np.array_equal(lo, ref[:, 1]), choice
        assert hi.flags["C_CONTIGUOUS"] and lo.flags["C_CONTIGUOUS"]


@needs_native
def test_native_digests_of_every_length_up_to_three_blocks() -> None:
    ids = ["".join(chr(0x41 + (i * 7 + n) % 26) for i in range(n)) for n in range(0, 390)]
    hi, lo = digests(ids, "native")
    ref = _reference(ids)
    assert np.array_equal(hi, ref[:, 0]) and np.array_equal(lo, ref[:, 1])


@needs_native
def test_empty_batch_and_lone_surrogate() -> None:
    for choice in ("native", "python"):
        hi, lo = digests([], choice)
        assert (len(hi), len(lo)) == (0, 0)
        with pytest.raises(UnicodeEncodeError):
            digests(["ok", "\ud800"], choice)
    not_str: list = ["ok", 3]
    with pytest.raises(TypeError):
        digests(not_str, "native")


@needs_native
def test_the_choice_follows_obsflow_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert digester() == "native"
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    assert digester() == "python"
    assert digester("native") == "native"
    monkeypatch.setenv("OBSFLOW_DECODER", "rust")
    with pytest.raises(ValueError, match="digester: expected one of native, python, got 'rust'"):
        digester()


def test_without_the_extension_python_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedupe_store, "_native", lambda: None)
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert digester() == "python"
    ids = _adversarial()
    hi, lo = digests(ids)
    ref = _reference(ids)
    assert np.array_equal(hi, ref[:, 0]) and np.array_equal(lo, ref[:, 1])


needs_native_arrow = pytest.mark.skipif(
    dedupe_store._native_arrow() is None, reason="obsflow_native without id_digests_arrow (build native/ first)"
)


@needs_native_arrow
def test_array_digests_read_the_buffers_and_equal_python() -> None:
    ids = _adversarial() + _random(3_000, seed=11)
    ref = _reference(ids)
    arr = pa.array(ids, pa.string())
    chunked = pa.chunked_array([arr.slice(0, 5), arr.slice(5, 1_000), arr.slice(1_005)])
    for value in (arr, arr.slice(0, len(ids)), chunked):
        for choice in ("native", "python"):
            hi, lo = array_digests(value, choice)
            assert np.array_equal(hi, ref[:, 0]) and np.array_equal(lo, ref[:, 1]), choice
    # a slice with an offset, empty strings only (no data buffer), no values, a large_string array
    hi, lo = array_digests(arr.slice(7, 9), "native")
    assert np.array_equal(hi, ref[7:16, 0]) and np.array_equal(lo, ref[7:16, 1])
    hi, lo = array_digests(pa.array(["", ""], pa.string()), "native")
    assert np.array_equal(hi, _reference(["", ""])[:, 0])
    assert [len(w) for w in array_digests(pa.array([], pa.string()), "native")] == [0, 0]
    assert [len(w) for w in array_digests(pa.chunked_array([], pa.string()), "native")] == [0, 0]
    hi, lo = array_digests(pa.array(ids[:40], pa.large_string()), "native")
    assert np.array_equal(lo, ref[:40, 1])
    with pytest.raises(ValueError, match="array_digests: the ids hold a null"):
        array_digests(pa.array(["a", None]), "native")


@needs_native_arrow
def test_native_arrow_digests_reject_offsets_outside_the_data() -> None:
    native = dedupe_store._native_arrow()
    offsets = pa.py_buffer(np.array([0, 2, 9], dtype=np.int32).tobytes())
    with pytest.raises(ValueError, match="value 1 has offsets 2..9 outside the data"):
        native(offsets, pa.py_buffer(b"abcd"), 0, 2)
    with pytest.raises(ValueError, match="the offsets buffer is shorter than the array"):
        native(offsets, pa.py_buffer(b"abcd"), 1, 2)
