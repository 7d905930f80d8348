"""The OpenAI-compatible gateway: routing, keys, limits, costs, tracing, metrics."""

from corral.gateway.app import Gateway
from corral.gateway.auth import KeyStore
from corral.gateway.routing import Breaker, attempt_plan, choose_route, least_loaded, sticky_bucket
from corral.gateway.tracing import TraceWriter

__all__ = [
    "Breaker",
    "Gateway",
    "KeyStore",
    "TraceWriter",
    "attempt_plan",
    "choose_route",
    "least_loaded",
    "sticky_bucket",
]
