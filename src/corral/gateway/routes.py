"""The route table: the live deployments, the per-version in-flight count, and one lock around rebuilds."""

from __future__ import annotations

import threading
from typing import Any

from corral.gateway.deployments import DeploymentStore, LiveDeployment, RouteResolver


class VersionCounts:
    """Requests (and shadow copies) each registry version is serving now, so a draining one retires at 0."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def get(self, ref: str) -> int:
        return self.counts.get(ref, 0)

    def add(self, ref: str | None, delta: int) -> None:
        if ref is not None:
            self.counts[ref] = self.counts.get(ref, 0) + delta


class RouteTable:
    """Owns `live` (deployment name → resolved routes); rebuilt under a lock when the store changes.

    `refresh` runs on the watcher thread and from admin PUT/DELETE; the lock keeps two rebuilds from
    interleaving the resolver's bookkeeping (pending targets, the versions whose workers are kept).
    Readers on the event loop take `live` without the lock: it is replaced whole, never mutated.
    """

    def __init__(
        self, deployments: DeploymentStore, resolver: RouteResolver, in_flight: VersionCounts
    ) -> None:
        self.deployments = deployments
        self.resolver = resolver
        self.in_flight = in_flight
        self.live: dict[str, LiveDeployment] = {}
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None

    def refresh(self) -> bool:
        """Rebuild the routes when deployments, aliases or audit changed (or a worker was pending)."""
        with self._lock:
            signature = self.deployments.signature()
            if signature == self._signature and not self.resolver.pending:
                return False
            self.live = self.resolver.build(self.deployments.specs())
            self._signature = signature
            return True

    def ready_routes(self) -> dict[str, int]:
        return {name: sum(r is not None for r in live.routes) for name, live in self.live.items()}
