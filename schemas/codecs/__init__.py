"""Codecs turn a :class:`transforms.batch.RawBatch` of payload bytes into a
:class:`transforms.batch.Batch` of wire-schema columns, rejecting what cannot be decoded
with ``format_violation``, ``schema_violation`` or ``size_violation``."""

from __future__ import annotations

from .json_codec import JsonCodec

CODECS = {"json": JsonCodec}


def codec_for(name: str, signal: str, max_bytes: int):
    """The codec registered as ``name`` for ``signal``; ``KeyError`` lists the known ones."""
    try:
        cls = CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known codecs: {', '.join(sorted(CODECS))}") from None
    return cls(signal=signal, max_bytes=max_bytes)
