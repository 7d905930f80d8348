"""Alias moves racing from several processes never corrupt the alias or its history."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from corral.artifacts import ArtifactStore
from corral.registry import Registry
from corral.store import Store

PROCESSES = 4
MOVES = 12


def _mover(db_url: str, artifacts: str, worker: int) -> None:
    registry = Registry(Store(db_url), ArtifactStore(artifacts), actor=f"worker-{worker}")
    for i in range(MOVES):
        registry.models.set_alias("support", "production", 1 + (worker + i) % 3, reason=f"w{worker}-{i}")


def test_concurrent_alias_moves_keep_a_consistent_history(registry, model_dir, db_url, tmp_path: Path):
    for marker in "abc":
        registry.models.register("support", model_dir(marker))
    registry.models.set_alias("support", "production", 1)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_mover, args=(db_url, str(tmp_path / "artifacts"), w)) for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    history = registry.models.alias_history("support", "production")
    assert history[0].from_version is None
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version, "a move was lost or applied out of order"
        assert after.from_version != after.to_version
    assert registry.models.resolve("support@production").version == history[-1].to_version
