"""The Kafka topics a spec reads and writes: listed, checked at start, created.

    obsflow topics list   [--spec PATH]
    obsflow topics create [--spec PATH] [--partitions N] [--replication-factor R]

A spec names source topics (``sources[i].topic``, or a ``topic_pattern`` that must match
at least one existing topic) and output topics (``outputs.alerts_topic`` when
``alerts.rules`` has rules, ``outputs.dead_letters_topic`` when set). :func:`check_topics`
runs before a job starts and names every missing topic at once, so a user never meets
them one at a time, or only when the first alert fires."""

from __future__ import annotations

from typing import Any, cast
from dataclasses import dataclass

from pipelines.spec import PipelineSpec


@dataclass(frozen=True)
class SpecTopic:
    """One topic (or topic pattern) a spec uses: ``key`` is its key path in the spec."""

    name: str
    key: str
    role: str  # "source <name>", "alerts output", "dead letters output"
    partitions: int  # what ``topics create`` gives it
    pattern: bool = False  # ``name`` is a regular expression matched against whole names


def spec_topics(spec: PipelineSpec, *, reads_kafka: bool = True) -> list[SpecTopic]:
    """Every topic the job reads or writes, sources first. ``reads_kafka=False`` (an
    embedded run) leaves out the sources and the alerts topic (an embedded run pushes no
    alerts); dead letters go to ``outputs.dead_letters_topic`` in every run."""
    out: list[SpecTopic] = []
    if reads_kafka:
        for i, src in enumerate(spec.sources):
            if src.topic is not None:
                out.append(SpecTopic(src.topic, f"sources[{i}].topic", f"source {src.name}", src.partitions))
            else:
                out.append(
                    SpecTopic(
                        cast(str, src.topic_pattern),
                        f"sources[{i}].topic_pattern",
                        f"source {src.name}",
                        src.partitions,
                        pattern=True,
                    )
                )
    default_parts = max((s.partitions for s in spec.sources), default=1)
    alerts = spec.outputs.alerts_topic
    if reads_kafka and alerts and spec.alerts is not None and spec.alerts.rules:
        out.append(SpecTopic(alerts, "outputs.alerts_topic", "alerts output", default_parts))
    if spec.outputs.dead_letters_topic:
        out.append(
            SpecTopic(
                spec.outputs.dead_letters_topic, "outputs.dead_letters_topic", "dead letters output", default_parts
            )
        )
    return out


def _admin(spec: PipelineSpec):
    from confluent_kafka.admin import AdminClient

    from sources.kafka import client_log

    conf = {k: v for k, v in spec.kafka.config.items() if k.startswith(("security.", "sasl.", "ssl."))}
    config: dict[str, Any] = {"bootstrap.servers": spec.kafka.bootstrap, "logger": client_log, **conf}
    return AdminClient(config)


def _metadata(spec: PipelineSpec):
    """Cluster metadata, with the Kafka source's retries; :class:`KafkaUnavailableError`
    (a ``ConnectionError``) saying what to start when the broker does not answer."""
    from runners.stats import STATS
    from sources.kafka import KafkaSource

    return KafkaSource(spec, [], counters=STATS)._metadata()


def _matches(t: SpecTopic, existing) -> list[str]:
    import re

    from sources.kafka import _INTERNAL

    if not t.pattern:
        return [t.name] if t.name in existing else []
    rx = re.compile(t.name)
    return sorted(n for n in existing if rx.fullmatch(n) and not _INTERNAL.match(n))


def create_hint(spec_arg: str | None) -> str:
    """How to create a spec's missing topics, as a command line."""
    return "obsflow topics create" + (f" --spec {spec_arg}" if spec_arg else "")


def check_topics(spec: PipelineSpec, *, reads_kafka: bool = True, spec_arg: str | None = None) -> None:
    """Raise :class:`sources.kafka.MissingTopicError` naming every topic the job would read
    or write that does not exist (a pattern matching none counts as missing), with the
    command that creates them. Does nothing when the job uses no topic."""
    from sources.kafka import MissingTopicError

    wanted = spec_topics(spec, reads_kafka=reads_kafka)
    if not wanted:
        return
    md = _metadata(spec)
    existing = {name for name, t in md.topics.items() if t.error is None}
    missing = [t for t in wanted if not _matches(t, existing)]
    if not missing:
        return
    fixed = [t for t in missing if not t.pattern]
    items = [f"{t.name!r} ({t.key})" if not t.pattern else f"a topic matching {t.name!r} ({t.key})" for t in missing]
    said = f"Kafka topic {items[0]} does not exist on {spec.kafka.bootstrap}"
    if len(items) > 1:
        rest = items[1:]
        said += f", nor {'does' if len(rest) == 1 else 'do'} {', '.join(rest[:-1]) + ' and ' if len(rest) > 1 else ''}{rest[-1]}"
    how = []
    if fixed:
        how.append(
            f"create {'them' if len(fixed) > 1 else 'it'} with `{create_hint(spec_arg)}` (or Kafka's own tools, e.g. "
            f"`kafka-topics.sh --bootstrap-server {spec.kafka.bootstrap} --create --topic {fixed[0].name} "
            f"--partitions {fixed[0].partitions}`)"
        )
    if len(fixed) < len(missing):
        how.append("create a topic each pattern matches, or fix the pattern")
    raise MissingTopicError(f"{said}: {'; '.join(how)}; or point the spec at existing topics.")


@dataclass(frozen=True)
class TopicState:
    """A spec topic as the cluster has it: ``found`` holds (name, partitions, replication)
    of each existing topic it names (several for a pattern)."""

    topic: SpecTopic
    found: tuple[tuple[str, int, int], ...]


def topic_states(spec: PipelineSpec) -> list[TopicState]:
    """Every topic the spec names (sources, alerts, dead letters) with what exists of it."""
    md = _metadata(spec)
    existing = {name: t for name, t in md.topics.items() if t.error is None}
    out = []
    for t in spec_topics(spec):
        found = []
        for name in _matches(t, existing):
            parts = existing[name].partitions
            repl = min((len(p.replicas) for p in parts.values()), default=0)
            found.append((name, len(parts), repl))
        out.append(TopicState(t, tuple(found)))
    return out


def create_topics(
    spec: PipelineSpec, *, partitions: int | None = None, replication: int = -1, timeout: float = 30.0
) -> list[tuple[SpecTopic, str]]:
    """Create every fixed topic the spec names that does not exist yet, with the spec
    source's ``partitions`` (outputs: the largest source's) unless ``partitions`` is given,
    and ``replication`` replicas (-1: the broker's ``default.replication.factor``).
    Returns ``(topic, outcome)`` per spec topic: "created", "exists" or, for a pattern,
    "pattern: create matching topics yourself". Raises ``RuntimeError`` naming the topic
    and the broker's reason when a creation fails."""
    from confluent_kafka.admin import NewTopic

    md = _metadata(spec)
    existing = {name for name, t in md.topics.items() if t.error is None}
    todo: dict[str, SpecTopic] = {}
    results: list[tuple[SpecTopic, str]] = []
    for t in spec_topics(spec):
        if t.pattern:
            results.append((t, "exists" if _matches(t, existing) else "pattern: create matching topics yourself"))
        elif t.name in existing or t.name in todo:
            results.append((t, "exists"))
        else:
            todo[t.name] = t
            results.append((t, "created"))
    if todo:
        admin = _admin(spec)
        futures = admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions or t.partitions, replication_factor=replication)
                for n, t in todo.items()
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        errors = []
        for name, fut in futures.items():
            try:
                fut.result(timeout)
            except Exception as e:  # noqa: BLE001 - KafkaException: reported with the topic's name
                err = e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)
                if "already exists" not in err:
                    errors.append(f"{name!r}: {err}")
        if errors:
            raise RuntimeError(f"could not create Kafka topic(s) on {spec.kafka.bootstrap}: {'; '.join(errors)}")
    return results
