"""Sampling decisions, with the OpenTelemetry Collector's values and its final-decision
rules (processor.go ``makeDecision``):

1. any policy returned **Dropped** (only ``drop`` policies do) → the trace is dropped;
2. else any **InvertNotSampled** (an ``invert_match`` attribute policy that matched) → not sampled;
3. else any **Sampled** → sampled, credited to the *first* policy that returned Sampled;
4. else any **InvertSampled** and no **NotSampled** → sampled, credited to the first InvertSampled;
5. else not sampled.

``drop`` policies are evaluated before all others, and a trace stops being evaluated by
later policies once one returns Dropped (as the collector breaks early); with
``sample_on_first_match`` it also stops at the first Sampled."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Decision(IntEnum):
    UNSPECIFIED = 0
    PENDING = 1
    SAMPLED = 2
    NOT_SAMPLED = 3
    DROPPED = 4
    ERROR = 5
    INVERT_SAMPLED = 6
    INVERT_NOT_SAMPLED = 7


S = np.int8(Decision.SAMPLED)
NS = np.int8(Decision.NOT_SAMPLED)
DROP = np.int8(Decision.DROPPED)
IS = np.int8(Decision.INVERT_SAMPLED)
INS = np.int8(Decision.INVERT_NOT_SAMPLED)
UNSPEC = np.int8(Decision.UNSPECIFIED)


def filled(n: int, d) -> np.ndarray:
    return np.full(n, d, dtype=np.int8)


def from_bool(mask: np.ndarray, yes=S, no=NS) -> np.ndarray:
    return np.where(mask, yes, no).astype(np.int8)


def final(decisions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine a ``(policies, traces)`` matrix (UNSPECIFIED where not evaluated).

    Returns ``(sampled bool, dropped bool, deciding policy index or -1)`` per trace."""
    p, n = decisions.shape
    if p == 0:
        return np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1, np.int32)
    dropped = (decisions == DROP).any(axis=0)
    inv_not = (decisions == INS).any(axis=0)
    is_s = decisions == S
    any_s = is_s.any(axis=0)
    is_is = decisions == IS
    any_is = is_is.any(axis=0)
    any_ns = (decisions == NS).any(axis=0)
    sampled_s = ~dropped & ~inv_not & any_s
    sampled_is = ~dropped & ~inv_not & ~any_s & any_is & ~any_ns
    sampled = sampled_s | sampled_is
    policy = np.full(n, -1, np.int32)
    policy[sampled_s] = np.argmax(is_s[:, sampled_s], axis=0)
    policy[sampled_is] = np.argmax(is_is[:, sampled_is], axis=0)
    return sampled, dropped, policy
