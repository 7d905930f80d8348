"""The data stages on a real store: bad traces with their corrections, a sample of good ones, replay, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.config import load_settings
from corral.errors import CorralError
from corral.pipeline import STAGES, PipelineRunner, RunStore
from corral.pipeline import runner as runner_module
from corral.store.models import FeedbackRow, TraceRow

SPEC = {
    "name": "refresh",
    "model": "helpdesk",
    "deployment": "support",
    "collect": {"window": "1d", "below": 0.5, "good_sample": 4, "use_corrections": True},
    "dataset": {"name": "support-refresh", "replay": 0.5, "split": "100/0/0"},
    "evaluate": {"gates": ["gate.yaml"]},
}


def _trace(registry: Any, n: int, question: str, score: float | None, correction: str | None = None) -> None:
    at = datetime.now(UTC) - timedelta(minutes=n)
    trace_id = f"{n:032x}"
    with registry.store.session() as s:
        s.add(
            TraceRow(
                id=trace_id, at=at, day=at.strftime("%Y-%m-%d"), deployment="support", endpoint="chat",
                model_version="helpdesk@1", status=200,
                request={"messages": [{"role": "user", "content": question}]},
                response={"choices": [{"message": {"role": "assistant", "content": f"model answer {n}"}}]},
            )
        )  # fmt: skip
        if score is not None:
            s.add(FeedbackRow(id=f"f{n:031x}", trace_id=trace_id, score=score, correction=correction))


@pytest.fixture
def setup(registry: Any, model_dir: Any, tmp_path: Path) -> Path:
    old = [{"messages": [{"role": "user", "content": f"old question {i}"}, {"role": "assistant", "content": f"old answer {i}"}], "split": "train"} for i in range(30)]  # fmt: skip
    registry.datasets.register("support", old, kind="chat")
    registry.models.register("helpdesk", model_dir("1"), lineage={"dataset": "support@1"})
    registry.models.set_alias("helpdesk", "production", 1)
    for n in range(6):
        _trace(registry, n, f"where are my loyalty points, case {n}?", 0.0, f"See Account > Rewards ({n}).")
    for n in range(6, 8):
        _trace(registry, n, f"an unhelpful answer {n}", 0.0)  # low-rated without a correction: skipped
    for n in range(8, 18):
        _trace(registry, n, f"what are your opening hours, case {n}?", 1.0)
    _trace(registry, 18, "never rated", None)
    _trace(registry, 60 * 30, "too old to count", 0.0, "old correction")  # outside the 1d window
    path = tmp_path / "refresh.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _fake_later_stages(monkeypatch: pytest.MonkeyPatch, fail: dict[str, bool]) -> None:
    fakes = dict(runner_module.STAGE_FUNCTIONS)
    for name in STAGES[2:]:

        def stage(ctx: Any, name: str = name) -> dict[str, Any]:
            if fail.get(name):
                raise CorralError(f"{name} was killed")
            return {"ok": name}

        fakes[name] = stage
    monkeypatch.setattr(runner_module, "STAGE_FUNCTIONS", fakes)


def test_collect_and_dataset_build_one_version_of_corrections_good_samples_and_replay(
    registry, setup, monkeypatch
):
    fail = {"train": True}
    _fake_later_stages(monkeypatch, fail)
    runner = PipelineRunner(registry, load_settings(environ={}), say=lambda _t: None)
    with pytest.raises(CorralError, match="train was killed"):
        runner.run(setup)
    [run] = RunStore(registry.store).list()
    run = RunStore(registry.store).get(run.id)
    collected = run.output("collect")
    assert (collected["bad"], collected["good"], collected["rows"], collected["corrected"]) == (6, 4, 10, 6)
    assert collected["production"] == "helpdesk@1"
    assert collected["skipped"] == {"low-rated without a correction": 2}
    made = run.output("dataset")
    assert made["dataset"] == "support-refresh@1" and made["replayed"] == 10 and made["rows"] == 20
    rows = registry.datasets.rows("support-refresh@1")
    answers = [r["messages"][-1]["content"] for r in rows]
    assert sum(a.startswith("See Account > Rewards") for a in answers) == 6  # corrections are the targets
    assert not any(
        a.startswith("model answer") and "loyalty" in str(r) for a, r in zip(answers, rows, strict=True)
    )
    assert sum(a.startswith("old answer") for a in answers) == 10
    version = registry.datasets.get("support-refresh@1")
    assert version.lineage["run"] == run.id and version.lineage["replay"]["from"] == "support@1"

    fail["train"] = False
    resumed = runner.resume(run.id)
    assert resumed.status == "succeeded" and resumed.stage("dataset").attempts == 1  # type: ignore[union-attr]
    assert [v.version for v in registry.datasets.versions("support-refresh")] == [1]  # no second version


def test_too_few_rated_traces_fail_the_collect_stage_clearly(registry, setup, monkeypatch):
    _fake_later_stages(monkeypatch, {})
    (setup).write_text(yaml.safe_dump({**SPEC, "collect": {**SPEC["collect"], "min_rows": 50}}))
    runner = PipelineRunner(registry, load_settings(environ={}), say=lambda _t: None)
    with pytest.raises(CorralError, match="collected 10 rated traces .* fewer than collect.min_rows=50"):
        runner.run(setup)
