"""Client error events grouped by a normalized stack-trace fingerprint.

Consumes event rows (``event_type``, ``ts``, ``error_message``, ``error_stack``); only
``event_type == "error"`` rows with a stack or message count. Normalization (columnar,
``pyarrow.compute`` regexes): the first line keeps only the error type (the text before
``:``, the message varies; a Python traceback's type comes from its last line); query
strings and fragments (cache busters) go; URLs and paths become file basenames (so CDN hosts
and shards, versioned directories go); content hashes in bundle names go
(``main.3f9a1b2c.js`` → ``main.js``, ``417.e4f5a6b7.chunk.js`` → ``417.chunk.js``,
``chunk-5f2e9c1a.js`` → ``chunk.js``, Vite's ``index-DiwrgTda.js`` → ``index.js``); line and
column numbers (``:42:17``, ``, line 42``) go; memory addresses become ``0x?``; JVM generated
names lose their counters and hashes (``$$Lambda$45/0x…``, ``GeneratedMethodAccessor12``,
``$$EnhancerBySpringCGLIB$$a1b2c3``) as Sentry's grouping does; exception lines inside the
text keep their type, not their message. Function names and file basenames stay. The
fingerprint is the first 16 hex digits of SHA-1 of the normalized text.

Emits (``groups()``) one row per fingerprint: ``fingerprint``, ``error_type``,
``normalized``, ``count``, ``first_seen``, ``last_seen``, ``sample_message``."""

from __future__ import annotations

import hashlib
import pickle

import pyarrow as pa
import pyarrow.compute as pc


def _hash8() -> str:
    """An 8-character base64url-ish content hash as Vite / Rollup write it
    (``index-DiwrgTda.js``): 8 word characters with at least one digit or capital
    (so ``-checkout.js`` stays). RE2 has no lookahead: one alternative per position."""
    cls, other = "[0-9A-Z]", "[A-Za-z0-9_]"
    return "(?:" + "|".join(f"[a-z_]{{{k}}}{cls}{other}{{{7 - k}}}" for k in range(8)) + ")"


_EXT = r"(?:\.[A-Za-z][A-Za-z0-9]*)*\.(?:m?js|cjs|jsx|tsx?|css|wasm|map)"
#: (pattern, replacement) in order; see the module doc
_RULES = [
    (r"0x[0-9a-fA-F]+", "0x?"),
    # query strings and fragments of a file (cache busters: app.js?v=123, app.js#x)
    (r"(\.[A-Za-z][A-Za-z0-9]{0,4})[?#][^\s():]*", r"\1"),
    # URLs and paths → the file's basename (hosts, CDN shards, versioned directories go)
    (r"\bnode:[^\s()]*/", ""),
    (r"(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s()]*/|(?:[A-Za-z]:)?[\\/][^\s()]*[\\/])([^\\/\s()]+)", r"\1"),
    # content hashes in file names: main.3f9a1b2c.js, 417.e4f5a6b7.chunk.js, chunk-5f2e9c1a.js, index-DiwrgTda.js
    (r"[.\-_~][0-9a-fA-F]{6,}(" + _EXT + r")\b", r"\1"),
    (r"[.\-_~]" + _hash8() + r"(" + _EXT + r")\b", r"\1"),
    # line and column numbers: file.js:12:34, Foo.java:12, node:internal/x:95:5, Python's ", line 42"
    (r"(\.[A-Za-z][A-Za-z0-9]{0,4}):\d+(?::\d+)?", r"\1"),
    (r":\d+(?::\d+)?(\)|\s|$)", r"\1"),
    (r", line \d+", ""),
    # JVM generated names: lambdas, reflection accessors, CGLIB proxies; "... 12 more"; jar versions
    (r"\$\$Lambda\$?\d*(?:/0x\?)?", "$$Lambda"),
    (r"(Generated(?:Serialization)?(?:Method|Constructor)?Accessor)\d+", r"\1"),
    (r"(\$\$[A-Za-z]*CGLIB\$\$)[0-9a-fA-F]+", r"\1"),
    (r"\.\.\. \d+ (more|common frames omitted)", r"... \1"),
    (r"\s*~?\[[^\]\s]*(?:\.jar|\.class)[^\]]*\]", ""),
    # exception lines inside the text keep their type, not their message (Python's last
    # line, Java's "Caused by: x.Y: message")
    (r"(?m)^(Caused by: [\w.$]+):.*$", r"\1"),
    (r"(?m)^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt|Failure|Declined)):.*$", r"\1"),
    (r"[ \t]+", " "),
]
PY_TRACEBACK = "Traceback (most recent call last)"

GROUP_SCHEMA = pa.schema(
    [
        ("fingerprint", pa.string()),
        ("error_type", pa.string()),
        ("normalized", pa.string()),
        ("count", pa.int64()),
        ("first_seen", pa.timestamp("ms", tz="UTC")),
        ("last_seen", pa.timestamp("ms", tz="UTC")),
        ("sample_message", pa.string()),
    ]
)


def normalize_stacks(stacks: pa.Array) -> pa.Array:
    """Normalized stack text per row (see the module doc)."""
    s = pc.fill_null(stacks, "")
    first = pc.extract_regex(s, r"^(?P<head>[^\n:]*)")
    head = pc.utf8_trim_whitespace(pc.struct_field(first, [0]))
    rest = pc.replace_substring_regex(s, r"^[^\n]*", "")
    for pattern, repl in _RULES:
        rest = pc.replace_substring_regex(rest, pattern, repl)
    rest = pc.utf8_trim_whitespace(pc.replace_substring_regex(rest, r"\n\s*", "\n"))
    # a Python traceback names its exception on its last line
    last = pc.struct_field(pc.extract_regex(rest, r"(?P<t>[A-Za-z_][\w.]*)$"), [0])
    head = pc.if_else(pc.and_(pc.equal(head, PY_TRACEBACK), pc.is_valid(last)), last, head)
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
        g = (
            pa.table({"n": norm, "ts": ts, "msg": t.column("error_message")})
            .sort_by("ts")
            .group_by("n", use_threads=False)
            .aggregate([("ts", "min"), ("ts", "max"), ("ts", "count"), ("msg", "first")])
        )
        for n, lo, hi, c, msg in zip(
            *(g.column(k).to_pylist() for k in ("n", "ts_min", "ts_max", "ts_count", "msg_first"))
        ):
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
        cols: list = list(zip(*[(fp, *v) for fp, v in items])) if items else [[]] * 7
        return pa.table([pa.array(list(c), f.type) for c, f in zip(cols, GROUP_SCHEMA)], schema=GROUP_SCHEMA)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.groups_, protocol=5)

    def restore(self, blob: bytes) -> None:
        self.groups_ = pickle.loads(blob)
