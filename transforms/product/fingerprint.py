"""Client error events grouped by a normalized stack-trace fingerprint.

Consumes event rows (``event_type``, ``ts``, ``error_message``, ``error_stack``); only
``event_type == "error"`` rows with a stack or message count. Normalization (columnar,
``pyarrow.compute`` regexes): the first line keeps only the error type (the text before
``:``, the message varies); URLs and paths become file basenames; hashes in bundle names
(``main.3f9a1b2c.js`` → ``main.js``, ``chunk-5f2e9c1a.js`` → ``chunk.js``) and line/column
numbers (``:42:17``) go; memory addresses become ``0x?``; function names and file basenames
stay. The fingerprint is the first 16 hex digits of SHA-1 of the normalized text.

Emits (``groups()``) one row per fingerprint: ``fingerprint``, ``error_type``,
``normalized``, ``count``, ``first_seen``, ``last_seen``, ``sample_message``."""

from __future__ import annotations

import hashlib
import pickle

import pyarrow as pa
import pyarrow.compute as pc

_RULES = [
    (r"0x[0-9a-fA-F]+", "0x?"),
    (r"(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s()]*/|(?:[A-Za-z]:)?[\\/][^\s()]*[\\/])([^\\/\s()]+)", r"\1"),
    (r"[.-][0-9a-fA-F]{6,}(\.[A-Za-z]{1,4}\b)", r"\1"),
    (r"(\.[A-Za-z]{1,4}):\d+(?::\d+)?", r"\1"),
    (r"[ \t]+", " "),
]

GROUP_SCHEMA = pa.schema([
    ("fingerprint", pa.string()), ("error_type", pa.string()), ("normalized", pa.string()), ("count", pa.int64()),
    ("first_seen", pa.timestamp("ms", tz="UTC")), ("last_seen", pa.timestamp("ms", tz="UTC")), ("sample_message", pa.string()),
])


def normalize_stacks(stacks: pa.Array) -> pa.Array:
    """Normalized stack text per row (see the module doc)."""
    s = pc.fill_null(stacks, "")
    first = pc.extract_regex(s, r"^(?P<head>[^\n:]*)")
    head = pc.utf8_trim_whitespace(pc.struct_field(first, [0]))
    rest = pc.replace_substring_regex(s, r"^[^\n]*", "")
    for pattern, repl in _RULES:
        rest = pc.replace_substring_regex(rest, pattern, repl)
    rest = pc.utf8_trim_whitespace(pc.replace_substring_regex(rest, r"\n\s*", "\n"))
    return pc.binary_join_element_wise(head, rest, "\n")


def normalize_stack(stack: str) -> str:
    return normalize_stacks(pa.array([stack], pa.string()))[0].as_py()


def fingerprint(normalized: str) -> str:
    return hashlib.sha1(normalized.encode()).hexdigest()[:16]


class ErrorGrouper:
    """Counts client errors per fingerprint, with first and last seen (event time)."""

    def __init__(self):
        self.groups_: dict[str, list] = {}  # fp -> [type, normalized, count, first, last, sample]

    def process(self, events: pa.Table) -> None:
        t = events.filter(pc.fill_null(pc.equal(events.column("event_type"), "error"), False))
        if t.num_rows == 0:
            return
        stack = pc.coalesce(t.column("error_stack"), t.column("error_message"), pa.scalar(""))
        norm = normalize_stacks(stack.combine_chunks() if isinstance(stack, pa.ChunkedArray) else stack)
        ts = pc.cast(t.column("ts").cast(pa.timestamp("ms", tz="UTC")), pa.int64())
        g = pa.table({"n": norm, "ts": ts, "msg": t.column("error_message")}).sort_by("ts").group_by("n", use_threads=False).aggregate(
            [("ts", "min"), ("ts", "max"), ("ts", "count"), ("msg", "first")])
        for n, lo, hi, c, msg in zip(*(g.column(k).to_pylist() for k in ("n", "ts_min", "ts_max", "ts_count", "msg_first"))):
            fp = fingerprint(n)
            cur = self.groups_.get(fp)
            if cur is None:
                self.groups_[fp] = [n.split("\n", 1)[0], n, c, lo, hi, msg]
            else:
                cur[2] += c
                if lo < cur[3]:
                    cur[3], cur[5] = lo, msg
                cur[4] = max(cur[4], hi)

    def groups(self) -> pa.Table:
        """One row per fingerprint, most frequent first (ties by fingerprint)."""
        items = sorted(self.groups_.items(), key=lambda kv: (-kv[1][2], kv[0]))
        cols = list(zip(*[(fp, *v) for fp, v in items])) if items else [[]] * 7
        return pa.table([pa.array(list(c), f.type) for c, f in zip(cols, GROUP_SCHEMA)], schema=GROUP_SCHEMA)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.groups_, protocol=5)

    def restore(self, blob: bytes) -> None:
        self.groups_ = pickle.loads(blob)
