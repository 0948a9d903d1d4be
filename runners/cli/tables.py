"""``obsflow tables``: each table's rows, files, snapshots and recorded source positions."""

from __future__ import annotations

from datetime import datetime, timezone

from runners.cli.common import add_common, fmt, load_spec_args, print_table, spec_arg


def cmd_tables(args) -> int:
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    spec = load_spec_args(args)
    from sinks.catalog import check_bucket

    check_bucket(spec.storage, spec_arg(args))
    catalog = open_catalog(spec.storage, create=False)
    ns = spec.storage.namespace
    if ns not in {n[0] for n in catalog.list_namespaces()}:
        print(
            f"no tables yet in namespace {ns!r} (warehouse {spec.storage.catalog.warehouse}); run `obsflow run` first"
        )
        return 0
    rows = [("table", "rows", "files", "snapshots", "latest snapshot", "committed at (UTC)", "positions")]
    for ident in sorted(catalog.list_tables(ns)):
        t = catalog.load_table(ident)
        snap = t.current_snapshot()
        if snap is None:
            rows.append((".".join(ident), "0", "0", "0", "-", "-", "-"))
            continue
        summ = snap.summary.additional_properties if snap.summary else {}
        at = datetime.fromtimestamp(snap.timestamp_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        pos = snapshot_offsets(t)
        rows.append(
            (
                ".".join(ident),
                fmt(int(summ.get("total-records", 0))),
                summ.get("total-data-files", "0"),
                str(len(t.snapshots())),
                str(snap.snapshot_id),
                at,
                f"{len(pos)} partitions, {fmt(sum(pos.values()))} records",
            )
        )
    print_table(rows)
    return 0


def add_parser(sub) -> None:
    """``obsflow tables``."""
    t = sub.add_parser("tables", help="list tables, row counts and latest snapshots")
    add_common(t)
    t.set_defaults(func=cmd_tables)
