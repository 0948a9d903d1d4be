"""``obsflow topics list|create``: the spec's Kafka topics, as the broker has them."""

from __future__ import annotations

from runners.cli.common import add_common, int_at_least, load_spec_args, print_table, spec_arg


def cmd_topics(args) -> int:
    """``obsflow topics list|create``: the spec's Kafka topics, as the broker has them."""
    from runners.topics import create_topics, topic_states

    spec = load_spec_args(args)
    if args.action == "create":
        results = create_topics(spec, partitions=args.partitions, replication=args.replication_factor or -1)
        for t, outcome in results:
            print(f"{t.name}  ({t.key}, {t.role}): {outcome}")
        created = sum(1 for _, o in results if o == "created")
        print(f"{created} topic{'s' if created != 1 else ''} created on {spec.kafka.bootstrap}")
        return 0
    rows = [("topic", "spec key", "role", "partitions", "replication")]
    missing = 0
    for st in topic_states(spec):
        if not st.found:
            missing += 1
            rows.append((st.topic.name, st.topic.key, st.topic.role, "missing", "-"))
        for name, parts, repl in st.found:
            rows.append((name, st.topic.key, st.topic.role, str(parts), str(repl)))
    print_table(rows)
    if missing:
        print(
            f"{missing} missing: create with `obsflow topics create{'' if spec_arg(args) is None else ' --spec ' + args.spec}`"
        )
    return 0


def add_parser(sub) -> None:
    """``obsflow topics``."""
    k = sub.add_parser("topics", help="list or create the Kafka topics the spec reads and writes (sources and outputs)")
    k.add_argument("action", choices=["list", "create"])
    add_common(k)
    k.add_argument(
        "--partitions",
        type=int_at_least(1),
        help="create: partitions of each new topic (default: the source's `partitions`; outputs: the largest)",
    )
    k.add_argument(
        "--replication-factor",
        type=int_at_least(1),
        help="create: replicas of each new topic (default: the broker's default.replication.factor)",
    )
    k.set_defaults(func=cmd_topics)
