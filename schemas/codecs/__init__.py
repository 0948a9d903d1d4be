"""Codecs turn a :class:`transforms.batch.RawBatch` of payload bytes into a
:class:`transforms.batch.Batch` of wire-schema columns, rejecting what cannot be decoded
with ``format_violation``, ``schema_violation`` or ``size_violation``.

Registered codecs: ``json`` (one JSON object per record; the compiled decoder in
``native/`` when it is installed, the Python one otherwise or with option
``decoder: python``: see :mod:`schemas.codecs.native_json`; likewise ``otlp_proto`` and ``otlp_json`` spans, logs and metrics), ``avro`` (Confluent-framed
Avro; option ``schema_registry_url``; the compiled decoder likewise: see
:mod:`schemas.codecs.native_avro`), ``otlp_proto`` and ``otlp_json`` (OpenTelemetry
export requests as the Collector's Kafka exporter writes them; signals ``span``, ``log``
and ``metric``, accepted per item: see :mod:`schemas.codecs.otlp_codec`)."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from core.batch import DEFAULT_MAX_BYTES

from .avro_codec import AvroCodec, encode_confluent
from .json_codec import JsonCodec
from .native_avro import NativeAvroCodec, native_avro_available
from .native_json import NativeJsonCodec, NativeOtlpCodec, NativeOtlpSpanCodec, chosen_decoder, native_otlp_signals
from .otlp_codec import OtlpCodec, to_otlp_json


def json_codec(signal: str, max_bytes: int = 65536, decoder: str | None = None):
    """The ``json`` codec: :class:`NativeJsonCodec` (the compiled decoder, its deferred
    records decoded by :class:`JsonCodec`) unless ``decoder`` (else ``$OBSFLOW_DECODER``)
    is ``python`` or the extension is not installed (then :class:`JsonCodec`, after one
    warning line). Both give the same rows and dead letters."""
    if chosen_decoder(decoder) == "native":
        return NativeJsonCodec(signal=signal, max_bytes=max_bytes)
    return JsonCodec(signal=signal, max_bytes=max_bytes)


def otlp_proto_codec(signal: str, max_bytes: int = 1 << 20, decoder: str | None = None):
    """The ``otlp_proto`` codec: :class:`NativeOtlpCodec` (the compiled decoder, its
    deferred messages decoded by :class:`OtlpCodec`) unless ``decoder`` (else
    ``$OBSFLOW_DECODER``) is ``python`` or the extension is not installed (or is an older
    build without that signal); else :class:`OtlpCodec`. Both give the same rows and dead
    letters."""
    if chosen_decoder(decoder) == "native" and signal in native_otlp_signals():
        return NativeOtlpCodec(signal=signal, max_bytes=max_bytes)
    return OtlpCodec(signal=signal, max_bytes=max_bytes, encoding="otlp_proto")


def otlp_json_codec(signal: str, max_bytes: int = DEFAULT_MAX_BYTES, decoder: str | None = None):
    """The ``otlp_json`` codec: :class:`NativeOtlpCodec` with ``encoding="otlp_json"`` (the
    compiled decoder, its deferred messages decoded by :class:`OtlpCodec`) unless
    ``decoder`` (else ``$OBSFLOW_DECODER``) is ``python`` or the extension is not installed
    (or is an older build without OTLP/JSON); else :class:`OtlpCodec`. Both give the same
    rows, dead letters and item bytes."""
    if chosen_decoder(decoder) == "native" and signal in native_otlp_signals("otlp_json"):
        return NativeOtlpCodec(signal=signal, max_bytes=max_bytes, encoding="otlp_json")
    return OtlpCodec(signal=signal, max_bytes=max_bytes, encoding="otlp_json")


def avro_codec(
    signal: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    schema_registry_url: str | None = None,
    registry_timeout_s: float = 5.0,
    decoder: str | None = None,
):
    """The ``avro`` codec: :class:`NativeAvroCodec` (the compiled decoder, its deferred
    records decoded by :class:`AvroCodec`) unless ``decoder`` (else ``$OBSFLOW_DECODER``)
    is ``python`` or the extension is not installed (or is an older build without Avro);
    else :class:`AvroCodec`. Both give the same rows and dead letters."""
    if chosen_decoder(decoder) == "native" and native_avro_available():
        return NativeAvroCodec(signal, max_bytes, schema_registry_url, registry_timeout_s)
    return AvroCodec(signal, max_bytes, schema_registry_url, registry_timeout_s)


#: codec name → factory taking ``signal=``, ``max_bytes=`` and codec options
CODECS: dict[str, Callable[..., Any]] = {
    "json": json_codec,
    "avro": avro_codec,
    "otlp_proto": otlp_proto_codec,
    "otlp_json": otlp_json_codec,
}

__all__ = [
    "CODECS",
    "codec_for",
    "AvroCodec",
    "JsonCodec",
    "NativeAvroCodec",
    "NativeJsonCodec",
    "NativeOtlpCodec",
    "NativeOtlpSpanCodec",
    "OtlpCodec",
    "encode_confluent",
    "to_otlp_json",
]


def codec_for(name: str, signal: str, max_bytes: int, options: dict | None = None):
    """The codec registered as ``name`` for ``signal``; ``KeyError`` lists the known ones.

    ``options`` are passed to the codec as keyword arguments (e.g.
    ``{"schema_registry_url": "http://registry:8081"}`` for ``avro``); a codec that
    does not take an option raises ``TypeError`` naming it.
    """
    try:
        factory = CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known codecs: {', '.join(sorted(CODECS))}") from None
    return factory(signal=signal, max_bytes=max_bytes, **(options or {}))
