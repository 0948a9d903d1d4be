"""``obsflow maintain``: retention (and archiving), compaction, snapshot expiry, orphan-file removal."""

from __future__ import annotations

from runners.cli.common import UsageError, add_common, fmt, load_spec_args, print_table, spec_arg


MAINTAIN_STEPS = ("retention", "compact", "expire", "orphans")


def _table_name(spec, name: str) -> str:
    """A table ``--table`` names (``logs`` or ``obs.logs``; archives too), checked against
    the tables obsflow writes; :class:`UsageError` naming them otherwise."""
    from schemas.tables import TABLES

    ns = spec.storage.namespace
    bare = name.removeprefix(ns + ".")
    base = bare.removesuffix("_archive")
    if base not in TABLES:
        raise UsageError(
            f"obsflow maintain: --table: no table {name!r}; tables: {', '.join(sorted(TABLES))} (and <table>_archive)"
        )
    return bare


def cmd_maintain(args) -> int:
    from sinks.maintenance import maintain

    spec = load_spec_args(args)
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else MAINTAIN_STEPS
    unknown = [s for s in steps if s not in MAINTAIN_STEPS]
    if unknown or not steps:
        raise UsageError(
            f"obsflow maintain: --steps: expected a comma-separated subset of {','.join(MAINTAIN_STEPS)}, "
            f"got {args.steps!r}"
        )
    tables = [_table_name(spec, t) for t in args.table] if args.table else None
    from sinks.catalog import check_bucket

    check_bucket(spec.storage, spec_arg(args))
    reports = maintain(spec, tables=tables, steps=steps)
    if not reports:
        print(f"no tables in namespace {spec.storage.namespace!r}")
        return 0
    rows = [
        (
            "table",
            "expired rows",
            "archived rows",
            "compacted partitions",
            "files before",
            "files after",
            "expired snapshots",
            "orphan files",
            "orphan bytes",
            "retries",
            "seconds",
        )
    ]
    for r in reports:
        rows.append(
            (
                r.table,
                fmt(r.expired_rows),
                fmt(r.archived_rows),
                str(r.compacted_partitions),
                str(r.files_before),
                str(r.files_after),
                str(r.expired_snapshots),
                str(r.orphan_files),
                fmt(r.orphan_bytes),
                str(r.retries),
                f"{r.seconds:.1f}",
            )
        )
    print_table(rows)
    return 0


def add_parser(sub) -> None:
    """``obsflow maintain``."""
    m = sub.add_parser("maintain", help="retention (and archiving), compaction, snapshot expiry, orphan-file removal")
    add_common(m)
    m.add_argument("--table", action="append", help="only this table (repeatable)")
    m.add_argument("--steps", help="comma-separated subset of retention,compact,expire,orphans")
    m.set_defaults(func=cmd_maintain)
