"""Enrich: add what the record does not carry itself.

Consumes table-named columns; emits the same rows plus
- ``geo_country``, ``geo_city`` from ``client_ip`` (looked up once per distinct IP);
- ``device``, ``browser``, ``browser_version``, ``os``, ``os_version`` from ``user_agent``
  (once per distinct user agent);
- ``service_team``, ``service_tier`` from the spec's ``services`` for logs.
Rejects with ``enrichment_failure`` a record whose ``client_ip`` is present but not an IP
address (when ``require_valid_ip``). The ingest time is added by ``shape.finish``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from core.encodings import one_array
from transforms.lookups import GeoLookup, UserAgentLookup

if TYPE_CHECKING:  # the spec model is a layer above transforms: types only, never imported at run time
    from pipelines.spec import EnrichStep, ServiceMeta


IP_DETAIL = "client_ip: not an IPv4 or IPv6 address: "


class _BadIpDetails:
    """The ``enrichment_failure`` detail of a row (``IP_DETAIL`` and the first 60
    characters of its ``client_ip``), for :meth:`core.batch.Batch.reject_mask`, which reads
    only the rejected rows: built once per distinct bad address, never for the whole column."""

    def __init__(self, dictionary: pa.Array, bad_codes: pa.Array, indices: pa.Array):
        texts = pc.binary_join_element_wise(IP_DETAIL, pc.utf8_slice_codeunits(dictionary.take(bad_codes), 0, 60), "")
        self._by_code = dict(zip(bad_codes.to_pylist(), texts.to_pylist()))
        self._codes = indices.fill_null(-1).to_numpy(zero_copy_only=False)

    def __getitem__(self, row: int) -> str | None:
        """The detail of table row ``row`` (None for a row whose address is valid)."""
        return self._by_code.get(int(self._codes[row]))


class Enricher:
    def __init__(self, signal: str, step: EnrichStep, services: dict[str, ServiceMeta]):
        self.signal = signal
        self.step = step
        self.services = services
        self._geo = GeoLookup(step.cache_size) if step.geo and signal == "event" else None
        self._ua = UserAgentLookup(step.cache_size) if step.user_agent and signal == "event" else None

    def __call__(self, batch):
        """The batch with the enrichment columns added, its bad addresses rejected. The
        dictionary encodings are the batch's shared ones (:class:`core.encodings.Encodings`):
        the user agents are encoded before the rejects, and their codes filtered with the rows."""
        t = batch.table
        ua = None
        if self._ua is not None and "user_agent" in t.column_names:
            ua = batch.encodings.dictionary_encode(one_array(t.column("user_agent")))
            ua_indices = ua.indices
        if self._geo is not None and "client_ip" in t.column_names:
            enc = batch.encodings.dictionary_encode(one_array(t.column("client_ip")))
            uniq = enc.dictionary.to_pylist()
            geos = self._geo.lookup_many(uniq)
            indices = enc.indices
            if self.step.require_valid_ip and not all(g.valid for g in geos):
                bad_codes = pa.array([k for k, g in enumerate(geos) if not g.valid], pa.int32())
                bad = pc.is_in(indices, value_set=bad_codes)
                details = _BadIpDetails(enc.dictionary, bad_codes, indices)
                before = batch.table.num_rows
                batch.reject_mask(bad, "enrichment_failure", details)
                t = batch.table
                if t.num_rows != before:  # the rows kept are the unmasked ones, in order
                    kept = pc.invert(bad.fill_null(False))
                    indices = indices.filter(kept)
                    if ua is not None:
                        ua_indices = ua_indices.filter(kept)
            t = t.append_column("geo_country", pa.array([g.country for g in geos], pa.string()).take(indices))
            t = t.append_column("geo_city", pa.array([g.city for g in geos], pa.string()).take(indices))
        if ua is not None and self._ua is not None:
            devs = [self._ua.lookup(u) for u in ua.dictionary.to_pylist()]
            for name in ("device", "browser", "browser_version", "os", "os_version"):
                t = t.append_column(name, pa.array([getattr(d, name) for d in devs], pa.string()).take(ua_indices))
        if self.step.service_metadata and self.signal == "log" and self.services:
            enc = pc.dictionary_encode(t.column("service").combine_chunks())
            metas = [self.services.get(s) for s in enc.dictionary.to_pylist()]
            t = t.append_column(
                "service_team", pa.array([m.team if m else None for m in metas], pa.string()).take(enc.indices)
            )
            t = t.append_column(
                "service_tier", pa.array([m.tier if m else None for m in metas], pa.string()).take(enc.indices)
            )
        batch.table = t
        return batch
