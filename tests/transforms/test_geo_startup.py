"""Issue 17 (graph build start-up): the geo lookup's country index is built once per data
file and kept on disk, checked before it is trusted, shared per process, and loading it
never starts ``geoip2fast``'s memory-measuring ``ps`` subprocesses. No services."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, cache: Path) -> dict:
    """Runs ``code`` in a fresh interpreter over this tree with ``$OBSFLOW_CACHE=cache``;
    ``code`` prints one JSON line, returned parsed."""
    env = {**os.environ, "OBSFLOW_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_STARTUP = """
import json, subprocess, sys
calls = []
real = subprocess.check_output
def spy(args, *a, **k):
    calls.append(list(args))
    return real(args, *a, **k)
subprocess.check_output = spy
from transforms.lookups import GeoLookup
a = GeoLookup()
b = GeoLookup(cache_size=10)
got = [tuple(g) for g in a.lookup_many(["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "81.2.69.160"])]
print(json.dumps({
    "ps_calls": len(calls),
    "shared": a._countries is b._countries and a._city is b._city,
    "geoip2fast_loaded": "geoip2fast.geoip2fast" in sys.modules,
    "got": got,
}))
"""


def test_geo_lookup_starts_without_subprocesses_and_shares_its_tables(tmp_path):
    """A cold start (empty cache) and a warm one both start no subprocess; two lookups of
    one process share the country index and the city reader; a warm start does not load
    ``geoip2fast`` at all (the index comes from disk) and answers the same."""
    cold = _run(_STARTUP, tmp_path)
    warm = _run(_STARTUP, tmp_path)
    assert cold["ps_calls"] == 0 and warm["ps_calls"] == 0
    assert cold["shared"] is True and warm["shared"] is True
    assert warm["geoip2fast_loaded"] is False
    assert cold["got"] == warm["got"]
    assert [g[1] for g in warm["got"]] == ["US", "AU", "US", "GB"]  # IPv6: the city file's country


@pytest.fixture
def g2f():
    from transforms import country_index

    country_index.geoip2fast_instance()
    import geoip2fast.geoip2fast as module

    return module


def _same(a, b) -> None:
    assert a.codes == b.codes and a.has_v6 == b.has_v6
    assert a.table.shape == b.table.shape and a.table.dtype == b.table.dtype == np.int64
    assert np.array_equal(np.asarray(a.table), np.asarray(b.table))


def test_cached_index_equals_a_fresh_build(tmp_path, g2f, monkeypatch):
    """The first load builds and writes the pair; the second reads it (no build) and is
    equal, array for array, to a fresh build from ``geoip2fast``'s lists, which are the
    networks its own lookup searches."""
    from transforms import country_index

    builds = []
    real_build = country_index.build
    monkeypatch.setattr(country_index, "build", lambda m: builds.append(1) or real_build(m))
    first = country_index.load(tmp_path)
    assert len(builds) == 1 and len(list(tmp_path.glob("countries-*.npy"))) == 1
    second = country_index.load(tmp_path)
    assert len(builds) == 1  # read from disk
    assert isinstance(second.table.base, np.memmap) or isinstance(second.table.base.base, np.memmap)
    fresh = country_index.CountryIndex(*real_build(g2f))
    _same(first, fresh)
    _same(second, fresh)
    flat = [x for chunk in g2f.mainListFirstIP for x in chunk]
    assert second.table.shape == (4, len(flat)) and second.starts.tolist() == flat
    assert second.codes[:16] == [None] * 16 and second.codes.count("US") == 1


def _corrupt_array_byte(npy: Path) -> None:
    data = bytearray(npy.read_bytes())
    data[-5] ^= 0x01  # inside the ids row: same size, same order of starts
    npy.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "flip_byte",
        "garbage_json",
        "json_not_an_object",
        "wrong_crc",
        "other_codes",
        "old_format",
        "wrong_shape",
        "no_sidecar",
    ],
)
def test_stale_or_corrupt_cache_is_rebuilt_not_trusted(tmp_path, g2f, monkeypatch, damage):
    """Each kind of damage to the cached pair makes the next load build the index again
    (and write a good pair), with the fresh build's arrays."""
    from transforms import country_index

    good = country_index.load(tmp_path)
    (npy,) = tmp_path.glob("countries-*.npy")
    meta_path = npy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif damage == "flip_byte":
        _corrupt_array_byte(npy)
    elif damage == "garbage_json":
        meta_path.write_text("{not json")
    elif damage == "json_not_an_object":
        meta_path.write_text("[1, 2]")
    elif damage == "other_codes":
        meta_path.write_text(json.dumps({**meta, "codes": ["XX" if c == "US" else c for c in meta["codes"]]}))
    elif damage == "wrong_crc":
        meta_path.write_text(json.dumps({**meta, "crc32": meta["crc32"] ^ 1}))
    elif damage == "old_format":
        meta_path.write_text(json.dumps({**meta, "format": country_index.FORMAT - 1}))
    elif damage == "wrong_shape":
        np.save(npy, np.asarray(good.table)[:, :-1])
    else:
        meta_path.unlink()
    builds = []
    real_build = country_index.build
    monkeypatch.setattr(country_index, "build", lambda m: builds.append(1) or real_build(m))
    again = country_index.load(tmp_path)
    assert builds == [1]
    _same(again, good)
    assert country_index.load(tmp_path) is not None and builds == [1]  # the pair was written again


def test_cache_key_follows_the_data_file(tmp_path, monkeypatch):
    """The file name carries the data file's hash and the format: another data file (or
    format) never reads this one's arrays."""
    from transforms import country_index

    a = tmp_path / "a.dat.gz"
    a.write_bytes(country_index.data_file().read_bytes())
    key = country_index._file_key(a)
    a.write_bytes(a.read_bytes() + b"\0")
    assert country_index._file_key(a) != key
    assert f"-v{country_index.FORMAT}-" in key


def test_unwritable_cache_builds_in_memory(tmp_path, g2f):
    """A cache directory that cannot be made (a file is in the way) still gives the index."""
    from transforms import country_index

    blocker = tmp_path / "file"
    blocker.write_text("x")
    index = country_index.load(blocker / "geo")
    assert index.countries(np.array([int(ipaddress.IPv4Address("8.8.8.8"))], dtype=np.int64)).tolist() == ["US"]


def test_ipv6_country_from_the_index_agrees_with_geoip2fast(g2f):
    """For IPv6 (which the bundled data has no networks for), the index answers what
    ``geoip2fast.lookup`` answers, for 20,000 random addresses across its address ranges
    (IPv4-compatible, below and above the last network's IPv6-sized span, mapped, global)."""
    from transforms import country_index

    index = country_index.shared()
    assert index.has_v6 is False
    g = country_index.geoip2fast_instance()
    rnd = random.Random(5)
    values = [rnd.randrange(1 << 32) for _ in range(4000)]  # ::a.b.c.d
    values += [(1 << 32) + rnd.randrange(1 << 95) for _ in range(4000)]  # inside the last network's span
    values += [(0xFFFF << 32) | rnd.randrange(1 << 32) for _ in range(4000)]  # ::ffff:a.b.c.d
    values += [rnd.randrange(1 << 128) for _ in range(4000)]
    values += [(0x2000 << 112) | rnd.randrange(1 << 125) for _ in range(4000)]
    last = int(index.starts[-1]) + (1 << (128 - int(index.netlens[-1]))) - 1
    values += [last, last + 1, 0, 1 << 32]
    ips = [str(ipaddress.IPv6Address(v)) for v in values]
    want = [g.lookup(ip).country_code for ip in ips]
    want = [None if c in ("", "--") else c for c in want]
    assert [index.country_v6(ip) for ip in ips] == want
    assert sum(1 for c in want if c) > 100  # ::a.b.c.d reaches real countries
    assert index.country_v6("fe80::1%eth0") is None and index.country_v6("not an ip") is None


def test_a_rebuild_deletes_the_pairs_of_other_data_files_and_stale_temporaries(tmp_path, g2f):
    """The pairs of an earlier data file or format are never read again: a rebuild deletes
    them, and temporary files a dead writer left an hour ago; it keeps its own pair and
    files that are not the index's."""
    from transforms import country_index

    old = [
        tmp_path / "countries-v0-0123456789abcdef0123456789abcdef.npy",
        tmp_path / "countries-v0-0123456789abcdef0123456789abcdef.json",
    ]
    other_data = [
        tmp_path / "countries-v1-fedcba9876543210fedcba9876543210.npy",
        tmp_path / "countries-v1-fedcba9876543210fedcba9876543210.json",
    ]
    stale = tmp_path / ".countries-v1-x.npy.123.456.tmp"
    fresh_tmp = tmp_path / ".countries-v1-x.json.789.1.tmp"  # a writer at work right now
    unrelated = tmp_path / "README"
    for f in [*old, *other_data, stale, fresh_tmp, unrelated]:
        f.write_bytes(b"x")
    hour_ago = os.path.getmtime(stale) - country_index.STALE_TMP_SECONDS - 5
    os.utime(stale, (hour_ago, hour_ago))
    country_index.load(tmp_path)
    key = country_index._file_key(country_index.data_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{key}.json", f"{key}.npy", fresh_tmp.name, "README"])
    assert country_index.load(tmp_path) is not None  # the kept pair is read (no rebuild needed)
