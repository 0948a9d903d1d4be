"""The scrubber and the enricher share a batch's dictionary encodings (issue 17 item 4):
``client_ip`` and ``user_agent`` are encoded once, and the output is the reference's."""

import pyarrow as pa
import pyarrow.compute as pc

from core.encodings import MAX_ENCODINGS, Encodings, one_array
from pipelines.spec import EnrichStep, PrivacySpec, ScrubStep
from tests.transforms.test_transforms import KEY, event, run
from transforms.enrich import Enricher
from transforms.scrub import Scrubber


def test_same_array_encoded_once_equal_values_elsewhere_encoded_again():
    enc = Encodings()
    a = pa.array(["x", "y", "x", None])
    first = enc.dictionary_encode(a)
    assert first.equals(pc.dictionary_encode(a))
    assert enc.dictionary_encode(a) is first
    assert enc.dictionary_encode(pa.chunked_array([a]).chunk(0)) is first  # same buffers
    copy = pa.array(["x", "y", "x", None])  # same values, other buffers
    assert enc.dictionary_encode(copy) is not first
    sliced = enc.dictionary_encode(a.slice(1, 2))
    assert sliced.dictionary.to_pylist() == ["y", "x"] and sliced.indices.to_pylist() == [0, 1]
    assert (enc.computed, enc.reused) == (3, 2)


def test_remembers_at_most_max_encodings():
    enc = Encodings()
    arrays = [pa.array([str(k)]) for k in range(MAX_ENCODINGS + 1)]
    for a in arrays:
        enc.dictionary_encode(a)
    enc.dictionary_encode(arrays[-1])
    enc.dictionary_encode(arrays[0])  # forgotten: computed again
    assert (enc.computed, enc.reused) == (MAX_ENCODINGS + 2, 1)


def test_one_array_keeps_a_single_chunk():
    a = pa.array(["a", "b"])
    assert one_array(pa.chunked_array([a])).buffers()[2].address == a.buffers()[2].address
    assert one_array(pa.chunked_array([a, a])).to_pylist() == ["a", "b", "a", "b"]


def test_enricher_reuses_the_scrubbers_encodings_with_the_same_rows():
    values = [
        event(event_id=f"e{k}", client_ip=ip, user_agent=ua)
        for k, (ip, ua) in enumerate(
            [("81.2.69.160", "curl/8.0"), ("not-an-ip", "curl/8.0"), ("81.2.69.160", "Mozilla/5.0"), ("::1", None)]
        )
    ]
    b, _ = run("event", values, steps=("validate",))
    scrub = Scrubber("event", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="native")
    b = scrub(b)
    by_scrubber = b.encodings.reused  # its JSON-key pass and its text pass share a column's encoding
    b = Enricher("event", EnrichStep(kind="enrich"), {})(b)
    assert b.encodings.reused - by_scrubber == 2  # client_ip and user_agent, encoded by the scrubber
    assert b.table.column("client_ip").to_pylist() == ["81.2.69.160", "81.2.69.160", "::1"]
    assert b.table.column("client_ip_anon").to_pylist() == ["81.2.69.0", "81.2.69.0", "::"]
    assert b.table.column("user_agent").to_pylist() == ["curl/8.0", "Mozilla/5.0", None]
    ref, _ = run("event", values, steps=("validate",))
    ref = Scrubber("event", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="python")(ref)
    ref.encodings = Encodings()  # nothing shared
    ref = Enricher("event", EnrichStep(kind="enrich"), {})(ref)
    assert ref.encodings.reused == 0
    assert b.table.equals(ref.table)
    assert b.rejects.details == ref.rejects.details == ["client_ip: not an IPv4 or IPv6 address: not-an-ip"]


def test_ipv4_anonymized_in_one_pass_as_the_reference():
    ips = ["81.2.69.160", "1.2.3.0", "01.2.3.4", "256.1.1.1", "1.2.3.4\n", "", "::1", "2001:db8::7", "bad", None]
    col = pa.array(ips * 3)
    native = Scrubber("event", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="native")
    ref = Scrubber("event", ScrubStep(kind="scrub"), PrivacySpec(pseudonym_key=KEY), hotpath="python")
    for sl in (col, col.slice(3, 12), col.slice(9, 1), col.slice(0, 0)):
        assert native._anonymize(sl).equals(ref._anonymize(sl))
    assert native._anonymize(col.slice(0, 10)).to_pylist() == [
        "81.2.69.0",
        "1.2.3.0",
        None,
        None,
        None,
        None,
        "::",
        "2001:db8::",
        None,
        None,
    ]
