"""Parity of the two hot paths after decoding (``transforms.scrub``: ``python``, the
reference, and ``native``, the compiled prefilter with caches; ``transforms.enrich``
likewise): over the generator's traffic and the fuzz corpus's mutants, every flow of the
default spec gives identical table rows, stage inputs and dead letters (values, types,
order), and the scrubber gives identical columns for crafted personal data, including
text the prefilter must not miss (non-ASCII case folding, separators in card numbers)."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from pipelines.spec import PrivacySpec, ScrubStep
from sources.generator import partition_stream
from tests.fuzz.corpus import SIGNALS, mutate, seeds
from transforms import scrub as scrub_mod
from transforms.batch import RawBatch
from transforms.scrub import Scrubber, chosen_hotpath

KEY = "parity-key-0123456789abcdef"
START_MS = 1_763_000_000_000
SOURCE = {"event": "events", "log": "logs", "span": "spans", "metric": "metrics"}


def _graph(hotpath: str, monkeypatch) -> PipelineGraph:
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = "/nonexistent/parity"  # never opened: only the flows run
    d.setdefault("privacy", {})["pseudonym_key"] = KEY
    monkeypatch.setenv("OBSFLOW_HOTPATH", hotpath)
    try:
        return PipelineGraph(parse_spec(d), counters=RunStats())
    finally:
        monkeypatch.delenv("OBSFLOW_HOTPATH")


def _tables(out) -> dict[str, pa.Table]:
    tables = {name: t for name, t in out.rows.items() if t is not None}
    for k, s in enumerate(out.stage_inputs):
        if s.table is not None:
            tables[f"stage{k}:{s.stage}:{s.shard}:{s.kind}"] = s.table
    return tables


def _counts(out) -> tuple:
    return (
        out.records_in,
        out.records_accepted,
        out.records_dead,
        out.records_dropped,
        sorted(out.dead_by_reason.items()),
    )


def assert_same(ref: PipelineGraph, new: PipelineGraph, raw: RawBatch) -> int:
    """Process ``raw`` on both graphs; assert identical outputs; return the rows compared."""
    a, b = ref.process(raw), new.process(raw)
    assert _counts(a) == _counts(b)
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    rows = 0
    for name in ta:
        assert ta[name].schema.equals(tb[name].schema), name
        for col in ta[name].column_names:
            assert ta[name].column(col).equals(tb[name].column(col)), (name, col)
        rows += ta[name].num_rows
    return rows


@pytest.fixture(scope="module")
def graphs():
    mp = pytest.MonkeyPatch()
    try:
        yield _graph("python", mp), _graph("native", mp)
    finally:
        mp.undo()


def test_hotpath_choice(monkeypatch):
    monkeypatch.delenv("OBSFLOW_HOTPATH", raising=False)
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert chosen_hotpath() == "native"
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    assert chosen_hotpath() == "python"
    monkeypatch.setenv("OBSFLOW_HOTPATH", "native")
    assert chosen_hotpath() == "native"
    monkeypatch.setenv("OBSFLOW_HOTPATH", "fast")
    with pytest.raises(ValueError, match="fast"):
        chosen_hotpath()


@pytest.mark.parametrize("signal", SIGNALS)
def test_generator_traffic(graphs, signal):
    """The generator's traffic with 5% bad records of every kind it makes (the same graph
    pair twice, so the native path's caches are warm the second time)."""
    ref, new = graphs
    values = [g.value for g in partition_stream(signal, "t", 0, 3000, start_ms=START_MS, bad_fraction=0.05)]
    compared = 0
    for _ in range(2):
        for k in range(0, len(values), 1000):
            part = values[k : k + 1000]
            raw = RawBatch(
                SOURCE[signal], SOURCE[signal], 0, part, list(range(k, k + len(part))), [START_MS + 60_000] * len(part)
            )
            compared += assert_same(ref, new, raw)
    assert compared > 3000


@pytest.mark.parametrize("signal", SIGNALS)
def test_fuzz_corpus(graphs, signal):
    """The fuzz suite's JSON seeds and their mutants, in batches of several sizes."""
    ref, new = graphs
    good = [s.value for s in seeds(signal, "json", 24)]
    rng = random.Random(f"hotpath-parity/{signal}")
    compared = 0
    for size in (1, 7, 60, 200):
        for _ in range(3):
            batch = []
            for _ in range(size):
                v = rng.choice(good)
                batch.append(v if rng.random() < 0.3 else mutate(v, rng.choice(good), signal, "json", rng))
            raw = RawBatch(
                SOURCE[signal], SOURCE[signal], 0, batch, list(range(len(batch))), [START_MS + 60_000] * len(batch)
            )
            compared += assert_same(ref, new, raw)
    assert compared > 0


TEXTS = [
    None,
    "",
    "/pricing",
    "mail me at jane.doe@example.com now",
    "jane%40example.com",
    "Authorization: Bearer abc.def-ghi",
    "BEARER%20xyz",
    "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "api_key=sk_live_0123456789abcdef",
    "PASSWORD: hunter22",
    "ghp_abcdefghijklmnopqrstuvwxyz",
    "xoxb-1234567890-abc",
    "AIza" + "A" * 35,
    "AKIA" + "B" * 16,
    "card 4111 1111 1111 1111 ok",
    "card4111111111111111",
    "4111-1111-1111-1111USD",
    "ts 1763000000000 (epoch ms)",
    "id b64df6cc0982d37bb6c1db345e7a208c",
    "\u212aey=abcdefgh",
    "caf\u00e9 \u017fecret=abcdefgh",
    "\u00c9t\u00e9 4012888888881881",
    "toKen : 'abcdefgh'",
    "12--345678901234",
    "1234 5678 9012 3456 7890 123",
    "x" * 5000 + "a@b.co",
]


@pytest.mark.parametrize("identifier", [False, True])
def test_scrubber_columns(identifier):
    """Crafted text through both scrubbers: free text and identifiers, twice each (the
    second time from the native path's caches), and as map keys and values."""
    step = ScrubStep(kind="scrub")
    privacy = PrivacySpec(pseudonym_key=KEY)
    ref, new = Scrubber("log", step, privacy, hotpath="python"), Scrubber("log", step, privacy, hotpath="native")
    rng = random.Random(3)
    for _ in range(2):
        col = pa.array([rng.choice(TEXTS) for _ in range(400)] + TEXTS, pa.string())
        fn = "scrub_identifier" if identifier else "scrub_text"
        assert getattr(new, fn)(col).equals(getattr(ref, fn)(col))
        assert new.scrub_text(col.slice(7, 100)).equals(ref.scrub_text(col.slice(7, 100)))  # a slice: offsets not at 0
        keys = pa.array([rng.choice(["token", "page", "api_key", "K\u212aey", "user.email"]) for _ in range(len(col))])
        maps = pa.MapArray.from_arrays(pa.array(range(0, len(col) + 1, 1), pa.int32()), keys, col)
        assert new.scrub_map(maps).equals(ref.scrub_map(maps))
        users = pa.array([rng.choice(["u1", "u2", None, "user-0-12"]) for _ in range(50)])
        assert new.pseudonymize(users).equals(ref.pseudonymize(users))


def test_dead_letter_payloads():
    """Dead-letter payloads (text, JSON with sensitive keys, binary) scrub alike."""
    step = ScrubStep(kind="scrub")
    privacy = PrivacySpec(pseudonym_key=KEY)
    ref, new = Scrubber("span", step, privacy, hotpath="python"), Scrubber("span", step, privacy, hotpath="native")
    values: list[bytes | None] = [
        None,
        b"",
        b'{"authorization": "Bearer x", "page": "a@b.co"}',
        b"\x00\x01token=abcdefghij",
        "caf\u00e9 4111111111111111".encode(),
    ]
    values += [s.value for s in seeds("span", "otlp_proto", 6)] + [s.value for s in seeds("log", "avro", 6)]
    values += [t.encode() for t in TEXTS if t is not None]
    assert new.scrub_raw(values) == ref.scrub_raw(values)


def test_prefilter_is_used_when_built():
    """With the extension built, the native path asks it (not the hint regex) which values to rewrite."""
    if scrub_mod._native is None:
        pytest.skip("obsflow_native not built")
    s = Scrubber("log", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="native")
    mask = s._hint_mask(pa.array(["/a", "x@y.z", None, "/b"]))
    assert mask is not None and mask.to_pylist() == [False, True, False, False]
    assert s._hint_mask(pa.array(["/a", "/b"])) is None


def test_control_bytes_agree_with_the_reference_pattern():
    """The compiled control-byte check (text or binary dead letter) gives
    ``_CONTROL.search``'s verdict for every byte value, alone and inside text."""
    if scrub_mod._native is None:
        pytest.skip("obsflow_native not built")
    import numpy as np

    values: list[bytes | None] = (
        [None, b""] + [bytes([c]) for c in range(256)] + [b"ab" + bytes([c]) + b"cd" for c in range(256)]
    )
    got = np.frombuffer(scrub_mod._native.control_bytes(values), dtype=np.bool_).tolist()
    assert got == [v is not None and scrub_mod._CONTROL.search(v) is not None for v in values]


@pytest.mark.parametrize("key_len", [16, 55, 64, 65, 300])
def test_pseudonyms_agree_with_python_hmac(key_len):
    """The compiled HMAC-SHA256 pseudonyms equal Python's ``hmac`` for keys shorter than,
    equal to and longer than a SHA-256 block, and for values of 0 to 300 bytes (block
    edges at 55, 56, 64 included), ASCII and not, with nulls and repeats."""
    key = ("k" * key_len)[:key_len]
    privacy = PrivacySpec(pseudonym_key=key)
    step = ScrubStep(kind="scrub")
    ref, new = Scrubber("event", step, privacy, hotpath="python"), Scrubber("event", step, privacy, hotpath="native")
    rng = random.Random(key_len)
    values = ["", "u", "user-0-12", "\u00e9t\u00e9", "\U0001f600"] + [
        "x" * n for n in (55, 56, 63, 64, 65, 119, 120, 300)
    ]
    values += ["".join(rng.choice("ab\u00e9\u4e2d1") for _ in range(rng.randint(0, 90))) for _ in range(60)]
    col = pa.array([rng.choice(values + [None]) for _ in range(500)], pa.string())
    assert new.pseudonymize(col).equals(ref.pseudonymize(col))
    assert new.pseudonymize(col.slice(3, 40)).equals(ref.pseudonymize(col.slice(3, 40)))
    assert new.pseudonymize(pa.array([None, None], pa.string())).equals(
        ref.pseudonymize(pa.array([None, None], pa.string()))
    )


def _mask_binary_ungated(s: Scrubber, value: bytes) -> bytes:
    """``Scrubber._mask_binary`` as it was before its literal gates: every pattern run over
    every binary payload (the reference the gated one must equal)."""
    data = bytearray(value)
    s._mask_framed_values(data)
    text = bytes(data).decode("latin-1")

    def stars(m):
        return "*" * len(m.group(0))

    if "@" in text or "%40" in text:
        text = scrub_mod._BINARY_EMAIL.sub(stars, text)
    text = scrub_mod._BINARY_BEARER.sub(stars, text)
    text = scrub_mod._BINARY_JWT.sub(stars, text)
    text = scrub_mod._BINARY_KNOWN.sub(stars, text)
    text = scrub_mod._BINARY_ASSIGN.sub(lambda m: m.group(1) + m.group(2) + "*" * (m.end() - m.end(2)), text)
    return scrub_mod._mask_cards(text, same_length=True).encode("latin-1")


def test_binary_dead_letter_gates():
    """Binary dead letters (control bytes, not UTF-8) are masked alike with and without the
    literal gates in front of the bearer, JWT and API-key patterns: every key shape, in
    every case, next to latin-1 letters and control bytes, and the generator's binary
    payloads."""
    s = Scrubber("event", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="native")
    shapes = [
        "Authorization: Bearer abc.def-ghi",
        "BEARER%20xyz",
        "bEaReR+tok/en==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "api_key=sk_live_0123456789abcdef",
        "PASSWORD: hunter22",
        "PassWd='abcdefgh'",
        "ghp_abcdefghijklmnopqrstuvwxyz",
        "ghs_" + "Z" * 24,
        "xoxb-1234567890-abc",
        "XOXB-1234567890-abc",
        "AIza" + "A" * 35,
        "AKIA" + "B" * 16,
        "akia" + "b" * 16,
        "X-API-KEY: abcdef123",
        "Client_Secret=abcdefgh",
        "REFRESH-TOKEN: zzzzzzzz",
        "rk_test_0123456789ab",
        "jane.doe@example.com",
        "card 4111 1111 1111 1111",
        "nothing to see",
        "Kelvin \u00e9secret=abcdefgh",
    ]
    values = []
    for k, shape in enumerate(shapes):
        body = shape.encode("latin-1")
        values += [
            b"\x00\x01" + body,
            b'{"page": "\xc3' + body + b'"}',
            bytes([0x12, k % 7]) + body + b"\xff\xfe" + body.lower(),
        ]
    values += [s.value for s in seeds("span", "otlp_proto", 6)] + [s.value for s in seeds("log", "avro", 6)]
    for v in values:
        assert s._mask_binary(v) == _mask_binary_ungated(s, v), v
    masked = s._mask_binary(b"\x00AKIA" + b"B" * 16 + b" Bearer abcdef")
    assert masked == b"\x00" + b"*" * 20 + b" " + b"*" * 13


def test_bad_ip_details_only_for_bad_addresses(monkeypatch):
    """An invalid ``client_ip`` is rejected with the same detail as before (prefix, first
    60 characters, nulls and repeats), and the detail text is built for the distinct bad
    addresses only, not for the whole column (it was: fails on the old code)."""
    import json

    import pyarrow.compute as pc

    from pipelines.spec import EnrichStep
    from transforms import enrich as enrich_mod
    from transforms.enrich import Enricher

    ips = ["81.2.69.160", "999.1.1", None, "not an ip " + "\u00e9" * 70, "10.1.2.3", "999.1.1", "2001:db8::1", "x"] * 5
    t = pa.table(
        {
            "_i": pa.array(range(len(ips)), pa.int64()),
            "client_ip": pa.array(ips, pa.string()),
            "page": pa.array([json.dumps(k) for k in range(len(ips))]),
        }
    )
    raw = RawBatch("events", "events", 0, [b"{}"] * len(ips), list(range(len(ips))), [START_MS] * len(ips))
    sliced: list[int] = []
    real = pc.utf8_slice_codeunits
    monkeypatch.setattr(
        enrich_mod.pc, "utf8_slice_codeunits", lambda a, *args, **kw: sliced.append(len(a)) or real(a, *args, **kw)
    )
    from core.batch import Batch

    b = Enricher("event", EnrichStep(kind="enrich", user_agent=False), {})(Batch(raw=raw, table=t))
    bad = [k for k, ip in enumerate(ips) if ip in ("999.1.1", "x") or (ip or "").startswith("not")]
    assert b.rejects.indices == bad
    assert b.rejects.reasons == ["enrichment_failure"] * len(bad)
    assert b.rejects.details == ["client_ip: not an IPv4 or IPv6 address: " + ips[k][:60] for k in bad]
    assert b.table.column("_i").to_pylist() == [k for k in range(len(ips)) if k not in bad]
    assert sliced == [3]  # the three distinct bad addresses, not the 40 rows


def test_json_key_patterns_unrolled():
    """The JSON string patterns of the dead-letter redaction (unrolled, possessive) find
    the same matches, with the same groups, as the plain ``(?:[^"\\\\]|\\\\.)*`` ones they
    replace, over random JSON-ish text (quotes, escapes, escaped quotes, backslash before
    a newline or at the end, unterminated strings) and real JSON with sensitive keys."""
    import json
    import re

    plain = r'"((?:[^"\\]|\\.)*)"'
    old_kv = re.compile(r"(" + plain + r'\s*:\s*)"(?:[^"\\]|\\.)*"')
    old_otlp = re.compile(
        r'("key"\s*:\s*' + plain + r'\s*,\s*"value"\s*:\s*\{\s*"stringValue"\s*:\s*)"(?:[^"\\]|\\.)*"'
    )
    pieces = [
        '"',
        "\\",
        '\\"',
        "\\\\",
        "a",
        ":",
        " ",
        "\n",
        ",",
        "{",
        "}",
        '"key"',
        '"value"',
        '"stringValue"',
        "token",
        "x" * 40,
        "\u00e9",
        '": "',
        "\\\n",
    ]
    rng = random.Random("json-unrolled")
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(4000)]

    def piece() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    texts += [f'[{{"key": "{piece()}", "value":{piece()[:1]} {{"stringValue": "{piece()}"}}}}]' for _ in range(2000)]
    texts += [
        json.dumps({"authorization": 'Bearer a"b', "page": "/x\\y", "n": [1, {"token": "t\n"}]}),
        json.dumps({"attributes": [{"key": "api.key", "value": {"stringValue": 's"k\\'}}]}),
        '{"a": "x' + "y" * 70000,
    ]
    from transforms.sensitive_json import JSON_CHARS, JSON_KEY, OTLP_KEY

    string = '"' + JSON_CHARS + '"'  # the key patterns with a string value after them
    found = {"kv": 0, "otlp": 0}
    for t in texts:
        for name, old, new in (
            ("kv", old_kv, re.compile(JSON_KEY.pattern + string)),
            ("otlp", old_otlp, re.compile(OTLP_KEY.pattern + string)),
        ):
            want = [(m.span(), m.groups()) for m in old.finditer(t)]
            assert [(m.span(), m.groups()) for m in new.finditer(t)] == want, t
            found[name] += len(want)
    assert found["kv"] > 1000 and found["otlp"] > 100, found  # the texts do exercise both
