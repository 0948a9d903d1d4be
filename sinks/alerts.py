"""Delivery of alert events from the ``global`` stage (:class:`pipelines.stages.GlobalStage`).

Alert events (state changes, already rows of ``obs.alerts`` through the Iceberg sink) go
- to the Kafka alerts topic (``outputs.alerts_topic``) through ``sinks.kafka.publish_alerts``
  when the run reads from Kafka (an embedded run has no broker to push to);
- to a real Prometheus Alertmanager (v2 API) when ``alerts.alertmanager_url`` is set
  (Alertmanager then does its own grouping, repeat and inhibition), together with the
  stage's re-sends of still-firing alerts (``out.resends``, every ``alerts.resend_delay``):
  each firing alert is posted with ``endsAt`` its validity ahead of the wall clock, so
  Alertmanager keeps it active while obsflow holds it firing;
- to :data:`RECORD`, a process-local log of events and of the notifications our own
  dispatcher computed (Alertmanager's grouping/repeat/inhibition semantics in event time),
  read by the run summary and the tests when the engine runs in this process.
Delivery is at-least-once (a restarted stage re-emits what it had not recorded)."""

from __future__ import annotations

import logging
import threading
import time

from core.stats import RunStats

log = logging.getLogger(__name__)

RECORD: list = []  # (AlertEvent | Notification) in emission order, process-local
_LOCK = threading.Lock()
_CLIENTS: dict = {}


def _kafka_publisher(spec):
    """``sinks.kafka.publish_alerts`` when present and the spec names an alerts topic, else None."""
    try:
        from sinks import kafka as ksink  # written separately (Kafka producer)
    except ImportError:
        return None
    fn = getattr(ksink, "publish_alerts", None)
    outputs = getattr(spec, "outputs", None)
    if fn is None or outputs is None or not getattr(outputs, "alerts_topic", None):
        return None
    return fn


def publish_stage_output(out, spec=None, kafka: bool = False, *, counters: RunStats) -> None:
    """Deliver the alert events of a stage output (a no-op for outputs without any); the
    Kafka producer records its deliveries into ``counters``."""
    events = getattr(out, "alerts", None)
    notes = getattr(out, "notifications", None)
    resends = getattr(out, "resends", None) or []
    if not events and not notes and not resends:
        return
    with _LOCK:
        RECORD.extend(("event", e) for e in events or [])
        RECORD.extend(("resend", e) for e in resends)
        RECORD.extend(("notification", n) for n in notes or [])
    if (not events and not resends) or spec is None:
        return
    publish = _kafka_publisher(spec) if kafka and events else None
    if publish is not None:
        publish(events, spec, counters=counters)
    alerts = getattr(spec, "alerts", None)
    if alerts is not None and alerts.alertmanager_url:
        from transforms.alerting import AlertmanagerClient

        key = alerts.alertmanager_url
        client = _CLIENTS.get(key) or _CLIENTS.setdefault(
            key, AlertmanagerClient(key, alerts.alertmanager_timeout.total_seconds(), alerts.external_url)
        )
        sent = list(events or []) + list(resends)
        try:
            client.post_alerts(sent, now=int(time.time() * 1000))
        except (
            OSError
        ) as e:  # Alertmanager down: the events are in obs.alerts and on the topic; the next re-send retries
            log.warning("alertmanager at %s: %s (%d events not delivered)", key, e, len(sent))


def reset() -> None:
    with _LOCK:
        RECORD.clear()
