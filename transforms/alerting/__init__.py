"""Alerting over rollup rows: rules (threshold / ratio / quantile, anomaly, absence) with
``for`` and ``keep_firing_for``, and Alertmanager's routing, grouping, timers and
inhibition in event time; alert events as obs.alerts rows, Kafka payloads and Alertmanager
v2 API bodies.

Public API: :class:`AlertEngine`, :class:`AlertOutput`, :class:`AlertingConfig`,
:class:`AlertRule`, :class:`Selector`, :class:`RouteConfig`, :class:`InhibitRule`,
:class:`Matcher`, :class:`RuleEvaluator`, :class:`Dispatcher`, :class:`Notification`,
:class:`AlertEvent`, :func:`fingerprint`, :func:`alert_rows`, :func:`alertmanager_payload`,
:class:`AlertmanagerClient`."""

from transforms.alerting.alertmanager import AlertmanagerClient
from transforms.alerting.config import AlertingConfig, AlertRule, InhibitRule, Matcher, RouteConfig, Selector
from transforms.alerting.dispatch import Dispatcher, Notification
from transforms.alerting.engine import AlertEngine, AlertOutput
from transforms.alerting.events import AlertEvent, alert_rows, alertmanager_payload, fingerprint
from transforms.alerting.rules import RuleEvaluator

__all__ = [
    "AlertEngine",
    "AlertOutput",
    "AlertingConfig",
    "AlertRule",
    "Selector",
    "RouteConfig",
    "InhibitRule",
    "Matcher",
    "RuleEvaluator",
    "Dispatcher",
    "Notification",
    "AlertEvent",
    "fingerprint",
    "alert_rows",
    "alertmanager_payload",
    "AlertmanagerClient",
]
