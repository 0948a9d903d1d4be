"""``geoip2fast``'s country networks as numpy arrays, built once per data file and kept on
disk, shared by every :class:`transforms.lookups.GeoLookup` of a process.

Loading ``geoip2fast`` costs a run's start-up about half a second of one core: unpickling
its data file (lists of Python ints), two ``ps`` subprocesses it starts to report its own
memory use, and then flattening its lists into arrays. This module does that work once per
data file: the arrays are written under ``$OBSFLOW_CACHE/geo`` (default
``~/.cache/obsflow/geo``) as a ``.npy`` file, named by the SHA-256 of the data file and
:data:`FORMAT`, with a JSON sidecar holding the country codes and
a CRC-32 of the array and the codes. A later process memory-maps the array instead of loading
``geoip2fast`` at all; a file that is missing, truncated, of another shape or whose CRC or
order does not check is rebuilt from the data and written again, never trusted. After a
rebuild, the pairs of other data files or formats are deleted (:func:`prune`). When the
cache directory cannot be written, the arrays are built in memory (same answers).

:func:`geoip2fast_instance` loads ``geoip2fast`` itself (for the rare lookups the arrays do
not answer) once per process, without its memory-measuring subprocesses."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import threading
import time
import zlib
from bisect import bisect_right
from itertools import chain, islice
from pathlib import Path
from typing import Any, cast

import numpy as np

#: bump when the layout or the meaning of the cached arrays changes (older files are ignored)
FORMAT = 1
_V4_LIMIT = 1 << 32
_NO_COUNTRY = ("", "--")
_PRIVATE_IDS = 16  # geoip2fast: country ids below 16 are private and reserved networks
#: a temporary file older than this was left by a writer that died (a write takes well under a second)
STALE_TMP_SECONDS = 3600
_lock = threading.RLock()
_shared: dict[str, Any] = {}


def data_file() -> Path:
    """The country data file bundled with ``geoip2fast`` (``geoip2fast.dat.gz`` in its
    package directory): the file every lookup of this module answers from."""
    spec = importlib.util.find_spec("geoip2fast")  # located, not imported (importing it costs 0.1 s)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("geoip2fast is not installed")
    return Path(spec.origin).resolve().parent / "geoip2fast.dat.gz"


def cache_dir() -> Path:
    """Where the arrays are kept: ``$OBSFLOW_CACHE/geo`` or ``~/.cache/obsflow/geo``."""
    return Path(os.environ.get("OBSFLOW_CACHE") or Path.home() / ".cache" / "obsflow") / "geo"


def geoip2fast_instance() -> Any:
    """The process's one ``geoip2fast.GeoIP2Fast`` over :func:`data_file`, loaded on first
    call. Its load-time memory report (``ps`` run twice in a subprocess) is switched off
    while it loads; its answers do not depend on it."""
    with _lock:
        inst = _shared.get("geoip2fast")
        if inst is None:
            import geoip2fast.geoip2fast as g2f

            measure = g2f.get_mem_usage
            g2f.get_mem_usage = lambda: 0.0  # geoip2fast has no flag for it; only its log line used it
            try:
                inst = g2f.GeoIP2Fast(verbose=False, geoip2fast_data_file=str(data_file()))
            finally:
                g2f.get_mem_usage = measure
            _shared["geoip2fast"] = inst
        return inst


class CountryIndex:
    """The IPv4 networks of the data file, sorted: ``starts``, ``lasts`` (first and last
    address), ``netlens`` and ``ids`` (index into ``codes``, the ISO code or None for
    private, reserved and unknown networks). :meth:`countries` places many addresses with
    one ``searchsorted``: the same network and country ``geoip2fast.lookup`` finds.
    ``has_v6`` tells whether the data file has IPv6 networks (then :meth:`country_v6`
    cannot answer and returns ``...``)."""

    def __init__(self, table: np.ndarray, codes: list[str | None], has_v6: bool):
        self.table = table
        self.starts, self.lasts, self.netlens, self.ids = table[0], table[1], table[2], table[3]
        self.codes = codes
        self.code_array = np.array(codes, dtype=object)
        self.has_v6 = has_v6

    def countries(self, v4: np.ndarray) -> np.ndarray:
        """Per IPv4 value (int64): its country code, or None."""
        pos = np.searchsorted(self.starts, v4, side="right") - 1
        safe = np.maximum(pos, 0)
        ok = (pos >= 0) & (v4 <= self.lasts[safe])
        return cast(np.ndarray, np.where(ok, self.code_array[self.ids[safe]], None))

    def country_v6(self, ip: str) -> Any:
        """The country ``geoip2fast.lookup(ip).country_code`` gives for an IPv6 address
        (None for ``--`` and ``""``), computed from the arrays when the data file has no
        IPv6 networks; ``...`` when it has (ask ``geoip2fast``). Mirrors its search: an
        address above every IPv4 network falls in the last one, sized as an IPv6 network."""
        if self.has_v6 or not len(self.starts):
            return ...
        try:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        except (OSError, ValueError):
            return None  # geoip2fast: invalid address, country ""
        if value < _V4_LIMIT:
            return self.countries(np.array([value], dtype=np.int64))[0]
        last = int(self.starts[-1]) + (1 << (128 - int(self.netlens[-1]))) - 1
        return self.codes[int(self.ids[-1])] if value <= last else None


def _file_key(path: Path) -> str:
    """The cache file's name for data file ``path``: :data:`FORMAT` and the file's SHA-256
    (the arrays depend on nothing else)."""
    return f"countries-v{FORMAT}-{hashlib.sha256(path.read_bytes()).hexdigest()[:32]}"


def build(module: Any) -> tuple[np.ndarray, list[str | None], bool]:
    """The arrays of :class:`CountryIndex` from a loaded ``geoip2fast.geoip2fast`` module's
    lists (its IPv4 networks are a prefix of them), built with ``np.fromiter``.
    Raises ValueError when the lists are not what this reads (out of order, ragged)."""
    first, netlen, ids = module.mainListFirstIP, module.mainListNetlength, module.mainListIDCountryCodes
    sizes = [len(c) for c in first]
    if sizes != [len(c) for c in netlen] or sizes != [len(c) for c in ids]:
        raise ValueError("geoip2fast's lists are ragged")
    n = 0
    for chunk in first:  # the IPv4 networks: a prefix of the sorted lists
        k = bisect_right(chunk, _V4_LIMIT - 1)
        n += k
        if k < len(chunk):
            break
    has_v6 = n < sum(sizes)
    table = np.empty((4, n), dtype=np.int64)
    table[0] = np.fromiter(islice(chain.from_iterable(first), n), dtype=np.int64, count=n)
    table[2] = np.fromiter(islice(chain.from_iterable(netlen), n), dtype=np.int64, count=n)
    table[3] = np.fromiter(islice(chain.from_iterable(ids), n), dtype=np.int64, count=n)
    if n and not np.all(np.diff(table[0]) > 0):
        raise ValueError("geoip2fast's networks are not in order")
    table[1] = table[0] + (np.int64(1) << (32 - table[2])) - 1
    codes: list[str | None] = []
    for i, name in enumerate(module.mainListNamesCountry):
        code = name.split(":", 1)[0]
        codes.append(None if i < _PRIVATE_IDS or code in _NO_COUNTRY else code)
    if n and (table[3].min() < 0 or table[3].max() >= len(codes)):
        raise ValueError("geoip2fast's country ids are out of range")
    return table, codes, has_v6


def _crc(table: np.ndarray, codes: list) -> int:
    """CRC-32 of the array's bytes, then of the codes as JSON."""
    return zlib.crc32(json.dumps(codes).encode(), zlib.crc32(table.data))


def _read(npy: Path, meta_path: Path) -> CountryIndex | None:
    """The cached index, or None when the pair is missing or does not check (format,
    shape, CRC of the array and the codes, order, id range)."""
    try:
        meta = json.loads(meta_path.read_text())
        table = np.load(npy, mmap_mode="r")
        codes = meta["codes"]
        if (
            meta.get("format") != FORMAT
            or table.dtype != np.int64
            or table.ndim != 2
            or table.shape[0] != 4
            or table.shape[1] != meta["rows"]
            or not table.flags.c_contiguous
            or _crc(table, codes) != meta["crc32"]
            or not all(c is None or isinstance(c, str) for c in codes)
        ):
            return None
        arr = cast(np.ndarray, table.view(np.ndarray))
        if arr.shape[1] and (not np.all(np.diff(arr[0]) > 0) or arr[3].min() < 0 or arr[3].max() >= len(codes)):
            return None
        return CountryIndex(arr, codes, bool(meta["has_v6"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError):
        return None


def _write(directory: Path, npy: Path, meta_path: Path, table: np.ndarray, codes: list, has_v6: bool) -> None:
    """Writes the pair, each file by rename (the array first: the sidecar names its CRC)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{npy.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, table)
    os.replace(tmp, npy)
    crc = _crc(table, codes)
    meta = {"format": FORMAT, "rows": int(table.shape[1]), "crc32": crc, "codes": codes, "has_v6": has_v6}
    tmp = directory / f".{meta_path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_path)


def load(directory: Path | None = None) -> CountryIndex:
    """The index of :func:`data_file`: read from ``directory`` (default :func:`cache_dir`)
    when a checked copy is there, else built from ``geoip2fast``'s lists and written there
    (best effort: an unwritable directory only costs the next process the build)."""
    directory = cache_dir() if directory is None else directory
    key = _file_key(data_file())
    npy, meta_path = directory / f"{key}.npy", directory / f"{key}.json"
    found = _read(npy, meta_path)
    if found is not None:
        return found
    geoip2fast_instance()
    import geoip2fast.geoip2fast as g2f

    table, codes, has_v6 = build(g2f)
    try:
        _write(directory, npy, meta_path, table, codes, has_v6)
        prune(directory, key)
    except OSError:
        pass
    return CountryIndex(table, codes, has_v6)


def prune(directory: Path, key: str) -> list[Path]:
    """Deletes the cache pairs of other data files or formats in ``directory`` (written by
    an earlier ``geoip2fast`` or :data:`FORMAT`: never read again) and temporary files that
    a writer left more than :data:`STALE_TMP_SECONDS` ago; keeps ``key``'s pair and other
    files. A process that has an old array memory-mapped keeps reading it (the file is
    unlinked, not truncated). Returns the paths deleted; a file that cannot be deleted is
    skipped."""
    gone = []
    now = time.time()
    for path in directory.iterdir():
        name = path.name
        stale_pair = name.startswith("countries-v") and path.suffix in (".npy", ".json") and path.stem != key
        try:
            stale_tmp = (
                name.startswith(".countries-v")
                and name.endswith(".tmp")
                and now - path.stat().st_mtime > STALE_TMP_SECONDS
            )
            if stale_pair or stale_tmp:
                path.unlink()
                gone.append(path)
        except OSError:
            continue
    return gone


def shared() -> CountryIndex:
    """The process's one :class:`CountryIndex` (:func:`load` on first call)."""
    with _lock:
        index = _shared.get("index")
        if index is None:
            index = _shared["index"] = load()
        return cast(CountryIndex, index)
