"""Product analytics from event rows: sessions (→ obs.sessions), funnels with a report in
obs.metrics' columns, and client errors grouped by normalized stack fingerprint.

Public API: :class:`ProductAnalytics`, :class:`ProductOutput`, :class:`ProductConfig`,
:class:`FunnelConfig`, :class:`FunnelStep`, :func:`signup_funnel`, :class:`ErrorGrouper`,
:func:`normalize_stack`, :func:`fingerprint`."""

from transforms.product.config import FunnelConfig, FunnelStep, ProductConfig, signup_funnel
from transforms.product.fingerprint import ErrorGrouper, fingerprint, normalize_stack, normalize_stacks
from transforms.product.sessions import ProductAnalytics, ProductOutput

__all__ = [
    "ProductAnalytics",
    "ProductOutput",
    "ProductConfig",
    "FunnelConfig",
    "FunnelStep",
    "signup_funnel",
    "ErrorGrouper",
    "fingerprint",
    "normalize_stack",
    "normalize_stacks",
]
