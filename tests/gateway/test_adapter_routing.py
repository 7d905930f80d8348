"""Adapter versions are routed to their base's one worker, which picks the adapter by `model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.config import Route
from corral.gateway.deployments import RouteResolver
from corral.gateway.routing import Breaker


class _RecordingWorkers:
    """A worker directory that records which versions it was asked to start, all ready at once."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.kept: set[str] = set()

    def ensure(self, version: Any, replicas: int, embeddings: bool = False) -> list[str]:
        if version.ref not in self.started:
            self.started.append(version.ref)
        return [f"http://127.0.0.1:9/{version.ref}/v1"]

    def retain(self, refs: set[str]) -> None:
        self.kept = set(refs)


def _adapter(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "adapter_config.json").write_text('{"r": 4}')
    (path / "adapter_model.safetensors").write_bytes(name.encode())
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_adapter_of_a_base_is_served_by_the_bases_one_worker(
    registry: Any, model_dir: Any, tmp_path: Path
) -> None:
    registry.models.register("base", model_dir("a"))
    registry.models.register("cx", _adapter(tmp_path, "cx"), base="base@1")
    registry.models.register("billing", _adapter(tmp_path, "billing"), base="base@1")
    workers = _RecordingWorkers()
    resolver = RouteResolver(registry.models.resolve, workers, Breaker)
    endpoints = [resolver.resolve(Route(target=t)) for t in ("cx@1", "billing@1", "base@1")]
    assert workers.started == ["base@1"]  # one worker, not one per adapter
    assert [e.model for e in endpoints if e] == ["cx@1", "billing@1", "base@1"]  # the worker picks by model
    assert len({tuple(e.base_urls) for e in endpoints if e}) == 1
    assert {"cx@1", "billing@1", "base@1"} <= resolver.refs  # the base's worker is kept while adapters route
